"""Model zoo: names, dispatch, exact reference key layout, sizes, WRN-Swish details, init statistics."""
import argparse
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.models import MODELS, ModelWrapper, Normalization, check_model_name, create_model
from core.models.wideresnetwithswish import _Block, pad_same
from core.utils.errors import UserError

CIFAR10 = dict(data='cifar10s', num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
CIFAR100 = dict(data='cifar100s', num_classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
TINY = dict(data='tiny-imagenet', num_classes=200, mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262))

BIG = ('wrn-34-20', 'wrn-34-20-swish', 'wrn-70-16-swish')  # hundreds of MB on CPU: their forward is marked slow


def meta_model(name, info=CIFAR10, normalize=False):
    with torch.device('meta'):
        return create_model(name, normalize, info, 'meta')


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_models_is_the_reference_list_in_order():
    assert MODELS == (
        'resnet18', 'resnet34', 'resnet50', 'resnet101',
        'preact-resnet18', 'preact-resnet34', 'preact-resnet50', 'preact-resnet101',
        'wrn-28-10', 'wrn-32-10', 'wrn-34-10', 'wrn-34-20',
        'preact-resnet18-swish', 'preact-resnet34-swish',
        'wrn-28-10-swish', 'wrn-34-20-swish', 'wrn-70-16-swish')


@pytest.mark.parametrize('name', [pytest.param(m, marks=pytest.mark.slow) if m in BIG else m
                                  for m in MODELS if m != 'wrn-32-10'])
def test_every_buildable_reference_model_forwards(name):
    torch.manual_seed(0)
    model = create_model(name, False, CIFAR10, 'cpu').eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize('name,info,size', [
    ('wrn-16-1-swish', CIFAR10, 32), ('wrn-16-4-swish', CIFAR100, 32), ('wrn-10-2-swish', TINY | {'data': 'svhns'}, 32),
    ('wrn-16-1', CIFAR100, 32), ('wrn-22-2', CIFAR10, 32), ('wrn-40-1-swish', CIFAR10, 32),
    ('preact-resnet18', TINY, 64), ('preact-resnet50', TINY, 64),
])
def test_generic_names_and_class_counts_forward(name, info, size):
    model = create_model(name, True, info, 'cpu').eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, info['num_classes'])


def test_wrapper_layout_and_parameter_names():
    model = create_model('wrn-16-2-swish', False, CIFAR10, 'cpu')
    assert isinstance(model, ModelWrapper)
    assert [n for n, _ in model.named_children()] == ['module']
    assert isinstance(model.module, nn.Sequential) and len(model.module) == 1
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ['module.0.init_conv.weight', 'module.0.layer.0.block.0.batchnorm_0.weight']
    normalized = create_model('wrn-16-2-swish', True, CIFAR10, 'cpu')
    assert isinstance(normalized.module[0], Normalization) and len(normalized.module) == 2
    assert all(k.startswith('module.1.') for k in normalized.state_dict())
    assert 'module.1.layer.0.block.0.batchnorm_0.weight' in dict(normalized.named_parameters())


def wrn_swish_reference_keys(depth, width, prefix):
    """The reference's key list written out by hand from the reference's WRN-Swish definition (not from the model)."""
    n = (depth - 4) // 6
    channels = [16, 16 * width, 32 * width, 64 * width]
    bn = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    keys = [f'{prefix}init_conv.weight']
    for g in range(3):
        for b in range(n):
            p = f'{prefix}layer.{g}.block.{b}.'
            keys += [p + 'batchnorm_0.' + s for s in bn]
            keys += [p + 'conv_0.weight']
            keys += [p + 'batchnorm_1.' + s for s in bn]
            keys += [p + 'conv_1.weight']
            if b == 0 and channels[g] != channels[g + 1]:
                keys += [p + 'shortcut.weight']
    keys += [f'{prefix}batchnorm.' + s for s in bn]
    keys += [f'{prefix}logits.weight', f'{prefix}logits.bias']
    return keys


@pytest.mark.parametrize('normalize,prefix', [(False, 'module.0.'), (True, 'module.1.')])
def test_wrn_28_10_swish_keys_equal_the_reference(normalize, prefix):
    keys = list(meta_model('wrn-28-10-swish', normalize=normalize).state_dict())
    assert keys == wrn_swish_reference_keys(28, 10, prefix)
    assert len(keys) == 155


def test_wrn_16_1_swish_has_no_shortcut_in_group_0():
    keys = list(meta_model('wrn-16-1-swish').state_dict())
    assert keys == wrn_swish_reference_keys(16, 1, 'module.0.')
    assert 'module.0.layer.0.block.0.shortcut.weight' not in keys


@pytest.mark.parametrize('name,entries,params', [
    ('wrn-28-10-swish', 155, 36_479_194),
    ('wrn-34-20-swish', 191, 184_531_674),
    ('wrn-70-16-swish', 407, 266_796_506),
    ('preact-resnet18', 107, 11_172_170),
    ('wrn-34-10', 191, 46_160_474),
    ('preact-resnet18-swish', 107, 12_548_426),
])
def test_sizes_match_the_reference(name, entries, params):
    model = meta_model(name)
    assert len(model.state_dict()) == entries
    assert n_params(model) == params


def test_preact_and_resnet_key_schemes():
    sd = meta_model('preact-resnet18').state_dict()
    assert 'module.0.layer2.0.shortcut.0.weight' in sd and 'module.0.bn.running_var' in sd
    assert 'module.0.linear.bias' in sd and 'module.0.layer1.0.shortcut.0.weight' not in sd
    sd = meta_model('resnet50').state_dict()
    assert 'module.0.layer1.0.shortcut.1.running_mean' in sd and 'module.0.layer4.2.conv3.weight' in sd
    sd = meta_model('wrn-34-10').state_dict()
    assert 'module.0.block1.layer.0.convShortcut.weight' in sd and 'module.0.fc.weight' in sd
    sd = meta_model('preact-resnet34-swish').state_dict()
    assert sd['module.0.layer_1.0.shortcut.weight'].shape == (128, 64, 3, 3)  # 3x3 shortcut
    assert 'module.0.layer_0.0.shortcut.weight' not in sd
    ti = meta_model('preact-resnet18', TINY).state_dict()
    assert list(ti) == list(meta_model('preact-resnet18').state_dict())
    assert ti['module.0.linear.weight'].shape == (200, 512)


def test_name_validation():
    with pytest.raises(argparse.ArgumentTypeError, match=r'\(32 - 4\) % 6 = 4.*wrn-34-10'):
        check_model_name('wrn-32-10')
    with pytest.raises(argparse.ArgumentTypeError, match='unknown model'):
        check_model_name('vit-b16')
    with pytest.raises(argparse.ArgumentTypeError, match='wrn-28-10-swish'):
        check_model_name('wrn-27-10-swish')
    for name in ('wrn-28-10-swish', 'wrn-16-1-swish', 'wrn-70-16-swish', 'wrn-16-4', 'preact-resnet101'):
        assert check_model_name(name) == name
    for bad in ('wrn-32-10', 'wrn-4-1', 'resnet152'):
        with pytest.raises(argparse.ArgumentTypeError):
            check_model_name(bad)
    assert all(check_model_name(m) == m for m in MODELS if m != 'wrn-32-10')
    parser = argparse.ArgumentParser()
    parser.add_argument('--model', type=check_model_name)
    assert parser.parse_args(['--model', 'wrn-16-4-swish']).model == 'wrn-16-4-swish'
    with pytest.raises(UserError, match='wrn-32-10.*wrn-34-10'):
        create_model('wrn-32-10', False, CIFAR10, 'cpu')
    with pytest.raises(UserError, match='tiny-imagenet'):
        create_model('wrn-28-10-swish', False, TINY, 'cpu')
    with pytest.raises(UserError, match='tiny-imagenet'):
        create_model('preact-resnet18-swish', False, TINY, 'cpu')


def test_normalization_layer_math_and_no_state():
    layer = Normalization((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.tensor([1.0, 0.5, 0.4]).view(1, 3, 1, 1).expand(2, 3, 2, 3)
    expected = torch.tensor([1.0, 1.0, 0.2]).view(1, 3, 1, 1).expand(2, 3, 2, 3)
    assert torch.allclose(layer(x), expected)
    assert layer.state_dict() == {}


@pytest.mark.parametrize('name', ['wrn-16-1-swish', 'preact-resnet18-swish'])
def test_internal_normalisation_buffers_are_non_persistent_and_follow_to(name):
    model = create_model(name, True, CIFAR100, 'cpu')
    backbone = model.module[1]
    assert torch.allclose(backbone.mean.flatten(), torch.tensor([0.5071, 0.4865, 0.4409]))
    assert torch.allclose(backbone.std.flatten(), torch.tensor([0.2673, 0.2564, 0.2762]))
    buffers = dict(model.named_buffers())
    assert {'module.0.mean', 'module.0.sigma', 'module.1.mean', 'module.1.std'} <= set(buffers)
    sd = model.state_dict()
    assert not any(k.endswith(('.mean', '.std', '.sigma')) for k in sd)
    model.to(torch.float64)
    assert backbone.mean.dtype == torch.float64 and model.module[0].sigma.dtype == torch.float64
    model.to('meta')
    assert backbone.std.device.type == 'meta' and model.module[0].mean.device.type == 'meta'


def test_internal_constants_by_dataset():
    expected = {'cifar10s': (0.4914, 0.2471), 'cifar10': (0.4914, 0.2471), 'cifar100': (0.5071, 0.2673),
                'svhns': (0.5, 0.5), 'svhn': (0.5, 0.5)}
    for data, (mean0, std0) in expected.items():
        backbone = create_model('wrn-10-1-swish', False, dict(CIFAR10, data=data), 'cpu').module[0]
        assert backbone.mean.flatten()[0].item() == pytest.approx(mean0)
        assert backbone.std.flatten()[0].item() == pytest.approx(std0)


def test_bn_momentum_and_activation():
    swish = create_model('wrn-10-1-swish', False, CIFAR10, 'cpu')
    bns = [m for m in swish.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-5 for m in bns)
    acts = [m for m in swish.modules() if isinstance(m, nn.SiLU)]
    assert len(acts) == 2 * 3 + 1 and all(m.inplace for m in acts)
    assert not any(isinstance(m, nn.ReLU) for m in swish.modules())
    psw = meta_model('preact-resnet18-swish')
    assert all(m.momentum == 0.01 for m in psw.modules() if isinstance(m, nn.BatchNorm2d))
    for name in ('wrn-16-1', 'preact-resnet18', 'resnet18'):
        assert all(m.momentum == 0.1 for m in meta_model(name).modules() if isinstance(m, nn.BatchNorm2d))


def test_pad_same_is_tf_same():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    p2 = pad_same(x, 2)
    assert p2.shape == (1, 1, 5, 5)
    assert torch.equal(p2[..., :4, :4], x) and p2[..., 4, :].abs().sum() == 0 and p2[..., :, 4].abs().sum() == 0
    p1 = pad_same(x, 1)
    assert p1.shape == (1, 1, 6, 6) and torch.equal(p1[..., 1:5, 1:5], x)
    with pytest.raises(ValueError):
        pad_same(x, 3)


def test_stride_2_conv_sees_top_left_window():
    """With all-ones 3x3 weights, out[i, j] of the stride-2 conv sums x[2i:2i+3, 2j:2j+3] (no left/top padding)."""
    block = _Block(1, 1, 2).eval()
    x = torch.rand(1, 1, 4, 4)
    a = block.relu_0(block.batchnorm_0(x.clone()))
    with torch.no_grad():
        block.conv_0.weight.fill_(1.0)
        out = block.conv_0(pad_same(a, 2))
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out[0, 0, 0, 0], a[0, 0, 0:3, 0:3].sum())
    assert torch.allclose(out[0, 0, 1, 1], a[0, 0, 2:4, 2:4].sum())


def test_block_residuals():
    """Zero main path: the output is shortcut(act(bn(x))) when in != out, else the raw x."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 4, 4)
    for in_planes, out_planes in ((2, 3), (2, 2)):
        block = _Block(in_planes, out_planes, 1, activation_fn=nn.SiLU).eval()
        with torch.no_grad():
            block.conv_1.weight.zero_()
            out = block(x.clone())
        if in_planes != out_planes:
            a = F.silu(x / math.sqrt(1 + 1e-5))  # eval BN with fresh stats (0, 1), weight 1, bias 0
            expected = F.conv2d(a, block.shortcut.weight)
        else:
            expected = x
        assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize('name', ['wrn-16-4-swish', 'wrn-16-4'])
def test_wrn_init_statistics(name):
    torch.manual_seed(0)
    model = create_model(name, False, CIFAR10, 'cpu')
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            target = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            tol = 4 / math.sqrt(w.numel())  # a few standard errors of the sample std
            assert abs(w.std().item() / target - 1) < max(tol, 0.02), (m, w.std().item(), target)
            assert abs(w.mean().item()) < 4 * target / math.sqrt(w.numel())
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
        elif isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            bound = 1 / math.sqrt(m.in_features)  # PyTorch default kaiming_uniform(a=sqrt(5))
            assert m.weight.abs().max() <= bound and m.weight.std() > 0.8 * bound / math.sqrt(3)


def test_init_is_reproducible_under_a_seed():
    torch.manual_seed(3)
    a = create_model('wrn-10-2-swish', False, CIFAR10, 'cpu').state_dict()
    torch.manual_seed(3)
    b = create_model('wrn-10-2-swish', False, CIFAR10, 'cpu').state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('name', ['wrn-16-2-swish', 'preact-resnet18-swish', 'wrn-10-2'])
def test_channels_last_equals_contiguous(name):
    """The manual F.pad of the Swish families must work on channels_last tensors."""
    torch.manual_seed(0)
    model = create_model(name, True, CIFAR10, 'cpu')
    x = torch.rand(2, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial running statistics
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_in_place_swish_trains():
    torch.manual_seed(0)
    model = create_model('wrn-10-1-swish', False, CIFAR10, 'cpu').train()
    loss = F.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

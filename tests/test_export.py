"""scripts/export.py: safetensors round trips and RobustBench's DMWideResNet key layout.

The RobustBench check loads the export strictly into `RobustBenchDMWideResNet` below, written out independently
of core/models after RobustBench's `model_zoo/architectures/dm_wide_resnet.py` (plain tensors as mean/std, its own
Swish, its own SAME padding), and compares logits with the project's model.
"""
import importlib.util
import json
import os
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.data import get_data_info
from core.models import create_model
from core.run.export import export_weights, read_safetensors, safetensors_metadata
from core.utils.errors import UserError, exit_on_user_error

pytest.importorskip('safetensors')  # an optional feature; requirements.txt installs it, so CI runs these tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('export_cli', os.path.join(ROOT, 'scripts', 'export.py'))
export_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_cli)


# ------------------------------------------------------------ RobustBench's DMWideResNet, written out independently
class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class RBBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin, momentum=0.01)
        self.relu_0 = Swish()
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout, momentum=0.01)
        self.relu_1 = Swish()
        self.conv_1 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
            v = x
        else:
            v = self.relu_0(self.batchnorm_0(x))
        v = F.pad(v, (1, 1, 1, 1) if self._stride == 1 else (0, 1, 0, 1))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(v))))
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class RBBlockGroup(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.block = nn.Sequential(*[RBBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.block(x)


class RobustBenchDMWideResNet(nn.Module):
    def __init__(self, num_classes=10, depth=28, width=10, mean=(0.4914, 0.4822, 0.4465),
                 std=(0.2471, 0.2435, 0.2616)):
        super().__init__()
        self.mean = torch.tensor(mean).view(3, 1, 1)  # plain attributes: not in the state dict
        self.std = torch.tensor(std).view(3, 1, 1)
        c = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, c[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(RBBlockGroup(n, c[0], c[1], 1), RBBlockGroup(n, c[1], c[2], 2),
                                   RBBlockGroup(n, c[2], c[3], 2))
        self.batchnorm = nn.BatchNorm2d(c[3], momentum=0.01)
        self.relu = Swish()
        self.logits = nn.Linear(c[3], num_classes)
        self.num_channels = c[3]

    def forward(self, x):
        out = self.init_conv((x - self.mean) / self.std)
        out = self.relu(self.batchnorm(self.layer(out)))
        return self.logits(F.avg_pool2d(out, 8).view(-1, self.num_channels))


# ------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def trained_like_model(name='wrn-16-1-swish', normalize=False, seed=0):
    """A model with non-trivial BatchNorm statistics (one train-mode forward), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, normalize, get_data_info('cifar10'), 'cpu')
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    return model.eval()


def make_run(tmp_path, normalize=False, name='wrn-16-1-swish'):
    run = tmp_path / 'run'
    run.mkdir()
    averaged, trained = trained_like_model(name, normalize, 0), trained_like_model(name, normalize, 1)
    torch.save({'model_state_dict': averaged.state_dict(), 'unaveraged_model_state_dict': trained.state_dict()},
               run / 'weights-best.pt')
    (run / 'args.txt').write_text(json.dumps({'model': name, 'normalize': normalize, 'data': 'cifar10s'}))
    return run, averaged, trained


def assert_same(a, b):
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------ tests
def test_safetensors_round_trip_and_eval_loading(tmp_path):
    run, averaged, trained = make_run(tmp_path)
    out = tmp_path / 'wa.safetensors'
    export_cli.main([str(run), str(out)])
    assert_same(read_safetensors(out), averaged.state_dict())  # the averaged model, same keys, bit-identical
    meta = safetensors_metadata(out)
    assert meta['layout'] == 'reference' and meta['source_state_dict'] == 'model_state_dict'
    assert json.loads(meta['model']) == 'wrn-16-1-swish' and meta['source'] == str(run / 'weights-best.pt')
    # no pickle: the file is an 8-byte header length, a JSON header and raw bytes
    raw = out.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], 'little')])
    assert header['module.0.logits.weight']['dtype'] == 'F32'

    export_cli.main([str(run / 'weights-best.pt'), str(tmp_path / 'raw.safetensors'), '--unaveraged'])
    assert_same(read_safetensors(tmp_path / 'raw.safetensors'), trained.state_dict())
    with pytest.raises(UserError, match='--unaveraged'):
        read_safetensors(out, 'unaveraged_model_state_dict')

    # the Trainer's --pretrained-file path reads it into a fresh model
    from core.run.parser import parser_train
    from core.training.builder import Trainer
    flags = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-16-1-swish', '--tau', '0', '--num-adv-epochs',
                                       '1', '--pretrained-file', str(out), '--log-dir', str(tmp_path)])
    assert_same(Trainer(get_data_info('cifar10'), flags).model.state_dict(), averaged.state_dict())


def test_robustbench_layout_loads_strictly_with_the_same_logits(tmp_path):
    run, averaged, _ = make_run(tmp_path)
    for out in (tmp_path / 'rb.safetensors', tmp_path / 'rb.pt'):
        meta = export_weights(str(run), str(out), layout='robustbench')
        sd = read_safetensors(out) if out.suffix == '.safetensors' else torch.load(out, weights_only=True)
        assert not any(k.startswith('module.') for k in sd) and 'init_conv.weight' in sd
        assert meta['robustbench'].startswith('DMWideResNet(num_classes=10, depth=16, width=1, activation_fn=Swish')
        rb = RobustBenchDMWideResNet(num_classes=10, depth=16, width=1)
        rb.load_state_dict(sd, strict=True)
        rb.eval()
        x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(rb(x), averaged(x), rtol=1e-5, atol=1e-5)


def test_export_refusals(tmp_path, capsys):
    run, *_ = make_run(tmp_path, normalize=True)
    code = None
    try:
        exit_on_user_error(lambda: export_cli.main([str(run), str(tmp_path / 'rb.pt'), '--layout', 'robustbench']))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and '--normalize' in err
    assert not (tmp_path / 'rb.pt').exists()
    out = tmp_path / 'x.safetensors'
    export_weights(str(run), str(out))
    before = out.read_bytes()
    with pytest.raises(UserError, match='--overwrite'):
        export_weights(str(run), str(out))
    assert out.read_bytes() == before
    with pytest.raises(UserError, match='.safetensors'):
        export_weights(str(run), str(tmp_path / 'x.npz'))
    with pytest.raises(UserError, match='WRN-Swish'):
        torch.save({'model_state_dict': create_model('resnet18', False, get_data_info('cifar10'), 'cpu').state_dict()},
                   tmp_path / 'resnet.pt')
        export_weights(str(tmp_path / 'resnet.pt'), str(tmp_path / 'r.pt'), layout='robustbench')
    sd = create_model('wrn-16-1-swish', False, get_data_info('cifar10'), 'cpu').state_dict()
    name = [k for k, v in sd.items() if v.is_floating_point()][2]
    sd[name].view(-1)[0] = float('nan')
    torch.save({'model_state_dict': sd}, tmp_path / 'nan.pt')
    with pytest.raises(UserError, match=f'tensor {re.escape(name)} holds NaN or inf'):   # as eval-aa.py refuses it
        export_weights(str(tmp_path / 'nan.pt'), str(tmp_path / 'nan-out.pt'))
    assert not (tmp_path / 'nan-out.pt').exists()

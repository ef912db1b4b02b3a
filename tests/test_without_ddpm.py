"""without_DDPM: distances, clip bound, losses, schedules, run-folder names, model keys (pure functions and
configuration). The training steps, attacks and the scripts are in tests/test_without_ddpm_training.py.

Every expected value is written down independently of the implementation: hand-worked formulas on tiny
tensors (Python floats and math.log), the clip bounds the original printed, the README's run-folder names.
"""
import math

import pytest
import torch
from without_ddpm_helpers import train_cifar

from core.losses.divergences import clip_bound, cw_margin, distance, smooth_targets
from core.losses.outer import distance_term, pgd_loss
from core.losses.outer import trades_loss as _trades_loss
from core.models.without_ddpm import create_without_ddpm_model
from core.training.without_ddpm import auto_name, make_optimizer, step_lr


def trades_loss(z_a, z_c, t, div, beta, bound=0.0, clip_clean=True):
    """without_DDPM's TRADES as its objective calls the one TRADES loss."""
    return _trades_loss(z_c, z_a, t, beta=beta, divergence=distance_term(div), bound=bound, clip_clean=clip_clean,
                        per_sample=True)


README_FLAGS = ('--model PreActResNet18 --epochs 110 --epsilon 8 --attack-iters 10 --pgd-alpha 2 --fname auto '
                '--weight_decay 5e-4 --batch-size 128 --optimizer SGDmom --seed 1').split()


def probs(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# Distances and the clip bound
# ---------------------------------------------------------------------------------------------------------------

def test_distances_by_hand():
    o, t = probs([0.5, 0.3, 0.2]), probs([0.25, 0.25, 0.5])
    kl_t_o = 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(0.25 / 0.3) + 0.5 * math.log(0.5 / 0.2)
    kl_o_t = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    m = [0.375, 0.275, 0.35]
    js = 0.5 * (sum(a * math.log(a / b) for a, b in zip([0.5, 0.3, 0.2], m))
                + sum(a * math.log(a / b) for a, b in zip([0.25, 0.25, 0.5], m)))
    expected = {'KL': kl_t_o, 'KLsqrt': math.sqrt(kl_t_o), 'RKLsqrt': math.sqrt(kl_o_t), 'JS': js,
                'JSsqrt': math.sqrt(js), 'LSE': 0.25 ** 2 + 0.05 ** 2 + 0.3 ** 2, 'L1square': 0.6 ** 2,
                '1': 0.6, '2': math.sqrt(0.25 ** 2 + 0.05 ** 2 + 0.3 ** 2), 'inf': 0.3}
    for div, value in expected.items():
        assert distance(o, t, div).item() == pytest.approx(value, rel=1e-12), div


def test_kl_with_one_hot_target_is_cross_entropy_and_masks_zero_entries():
    o, e0 = probs([0.5, 0.3, 0.2]), probs([1.0, 0.0, 0.0])
    assert distance(o, e0, 'KL').item() == pytest.approx(-math.log(0.5), rel=1e-12)
    assert distance(o, e0, 'RKLsqrt').item() == math.inf  # o has mass where the target has none
    # 0 log 0 is 0 in value and gradient (torch >= 2's kl_div gives NaN when the output is 0 too)
    o = probs([1.0, 0.0, 0.0]).requires_grad_(True)
    d = distance(o, e0, 'KL')
    d.sum().backward()
    assert d.item() == 0.0 and torch.isfinite(o.grad).all()


@pytest.mark.parametrize('div, printed', [
    ('LSE', (0.0, 0.10000001639127731, 0.17777778208255768)),
    ('KL', (0.0, 0.3566749691963196, 0.5108255743980408)),
    ('1', (0.0, 0.6000000834465027, 0.7999999523162842)),
    ('L1square', (0.0, 0.3600001037120819, 0.6399999260902405)),
])
def test_clip_bound_printed_values(div, printed):
    """The values the original printed at K = 10 for r = 0, 0.3, 0.4 (KL at r = 0: 0.0, not torch 2's nan)."""
    assert tuple(clip_bound(r, div, 10) for r in (0, 0.3, 0.4)) == printed


@pytest.mark.parametrize('div, at_03, at_04', [('JS', 0.1173, 0.1639), ('JSsqrt', 0.3425, 0.4048),
                                               ('KLsqrt', 0.5972, 0.7147)])
def test_clip_bound_four_digits(div, at_03, at_04):
    assert clip_bound(0.0, div, 10) == 0.0
    assert clip_bound(0.3, div, 10) == pytest.approx(at_03, abs=6e-5)
    assert clip_bound(0.4, div, 10) == pytest.approx(at_04, abs=6e-5)


@pytest.mark.parametrize('r', [0.1, 0.3, 0.5])
def test_clip_bound_closed_forms(r):
    k = 10
    assert clip_bound(r, 'LSE', k) == pytest.approx(r * r * k / (k - 1), rel=1e-6)
    assert clip_bound(r, 'KL', k) == pytest.approx(-math.log(1 - r), rel=1e-6)
    assert clip_bound(r, 'L1square', k) == pytest.approx(4 * r * r, rel=1e-6)
    assert clip_bound(r, '1', k) == pytest.approx(2 * r, rel=1e-6)
    assert clip_bound(r, 'inf', k) == pytest.approx(r, rel=1e-6)
    assert clip_bound(r, '2', k) == pytest.approx(math.sqrt(r ** 2 + (k - 1) * (r / (k - 1)) ** 2), rel=1e-6)
    assert clip_bound(r, 'RKLsqrt', k) == math.inf
    assert clip_bound(r, 'LSE', 100) == pytest.approx(r * r * 100 / 99, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The loss table (ls = 0), label smoothing
# ---------------------------------------------------------------------------------------------------------------

Z_ADV = [[2.0, 1.0, 0.0], [0.0, 0.5, 0.2]]
Z_CLEAN = [[3.0, 0.0, 0.0], [0.1, 1.5, -1.0]]
Y = [0, 1]


def softmax_rows(z):
    out = []
    for row in z:
        e = [math.exp(v) for v in row]
        out.append([v / sum(e) for v in e])
    return out


def one_hot(y, k=3):
    return [[1.0 if j == c else 0.0 for j in range(k)] for c in y]


def sq(a, b):
    return sum((u - v) ** 2 for u, v in zip(a, b))


def kl_hand(p, q):
    return sum(u * math.log(u / v) for u, v in zip(p, q) if u > 0)


@pytest.fixture
def batch():
    z_a, z_c = torch.tensor(Z_ADV, dtype=torch.float64), torch.tensor(Z_CLEAN, dtype=torch.float64)
    y = torch.tensor(Y)
    return z_a, z_c, y, smooth_targets(y, 3, 0.0).double()


def test_loss_pgd_kl(batch):
    z_a, _, y, t = batch
    p_a = softmax_rows(Z_ADV)
    expected = (-math.log(p_a[0][0]) - math.log(p_a[1][1])) / 2
    assert pgd_loss(z_a, t, 'KL', clip_bound(0, 'KL', 10))[0].item() == pytest.approx(expected, rel=1e-12)


def test_loss_trades_kl(batch):
    z_a, z_c, y, t = batch
    p_a, p_c = softmax_rows(Z_ADV), softmax_rows(Z_CLEAN)
    per = [-math.log(p_c[i][Y[i]]) + 6 * kl_hand(p_c[i], p_a[i]) for i in range(2)]
    assert trades_loss(z_a, z_c, t, 'KL', 6, 0.0)[0].item() == pytest.approx(sum(per) / 2, rel=1e-12)


def test_loss_pgd_lse_clipped(batch):
    z_a, _, y, t = batch
    p_a, e = softmax_rows(Z_ADV), one_hot(Y)
    d = [sq(p_a[i], e[i]) for i in range(2)]
    b = (d[0] + d[1]) / 2  # sample 0 is below b (drops out), sample 1 above
    assert d[0] < b < d[1]
    expected = (0.0 + (d[1] - b)) / 2
    assert pgd_loss(z_a, t, 'LSE', b)[0].item() == pytest.approx(expected, rel=1e-12)
    assert pgd_loss(z_a, t, 'LSE', 0.17777778208255768)[0].item() == pytest.approx(
        sum(max(0.0, v - 0.17777778208255768) for v in d) / 2, rel=1e-12)


def test_loss_trades_lse_clips_the_total_or_only_the_robust_term(batch):
    z_a, z_c, y, t = batch
    p_a, p_c, e = softmax_rows(Z_ADV), softmax_rows(Z_CLEAN), one_hot(Y)
    nat = [sq(p_c[i], e[i]) for i in range(2)]
    rob = [sq(p_a[i], p_c[i]) for i in range(2)]
    b = 0.1
    total = sum(max(0.0, nat[i] + 6 * rob[i] - b) for i in range(2)) / 2
    robust_only = sum(nat[i] + 6 * max(0.0, rob[i] - b) for i in range(2)) / 2
    assert trades_loss(z_a, z_c, t, 'LSE', 6, b)[0].item() == pytest.approx(total, rel=1e-12)
    assert trades_loss(z_a, z_c, t, 'LSE', 6, b, clip_clean=False)[0].item() == pytest.approx(robust_only, rel=1e-12)


def test_label_smoothing_targets():
    t = smooth_targets(torch.tensor([2]), 10, 0.1)
    assert t[0, 2].item() == pytest.approx(0.9, abs=1e-7)
    assert t[0, 0].item() == pytest.approx(0.1 / 9, abs=1e-8)
    assert t.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_trades_gradient_flows_through_the_clean_probabilities(batch):
    z_a, z_c, y, t = batch
    z_c = z_c.clone().requires_grad_(True)
    trades_loss(z_a, z_c, t, 'LSE', 6.0, 0.0)[0].backward()
    # the robust term alone (natural target = p_c itself gives 0 natural gradient is not the case here): the
    # gradient w.r.t. z_c differs from the natural-term gradient, i.e. p_c is not detached in the robust term
    z_c2 = z_c.detach().clone().requires_grad_(True)
    pgd_loss(z_c2, t, 'LSE', 0.0)[0].backward()
    assert not torch.allclose(z_c.grad, z_c2.grad)


def test_cw_margin_by_hand():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    # sample 0: top class is y=0 -> second largest 2 - 3 = -1; sample 1 (y=0): largest 5 - 0 = 5
    assert cw_margin(z, torch.tensor([0, 0])).item() == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------------------------
# LR schedules
# ---------------------------------------------------------------------------------------------------------------

def test_sgdmom_lr_around_the_milestones():
    n_b, lr = 391, 0.1

    def at(epoch, i):
        return step_lr(lr, epoch + (i + 1) / n_b)

    assert at(0, 0) == lr and at(98, n_b - 1) == lr
    assert at(99, n_b - 2) == lr          # t < 100
    assert at(99, n_b - 1) == lr / 10     # the last batch of 0-based epoch 99: t = 100.0
    assert at(100, 0) == lr / 10 and at(104, n_b - 2) == lr / 10
    assert at(104, n_b - 1) == lr / 100   # t = 105.0
    assert at(105, 0) == lr / 100 and at(119, n_b - 1) == lr / 100


def test_cosine_is_stepped_per_batch_with_period_2E():
    e = 4
    opt, sched = make_optimizer([torch.nn.Parameter(torch.zeros(1))], 'Cosine', 0.1, 5e-4, e)
    assert opt.param_groups[0]['nesterov'] is True and opt.param_groups[0]['momentum'] == 0.9
    for g in range(3 * e):
        assert opt.param_groups[0]['lr'] == pytest.approx(0.05 * (1 + math.cos(math.pi * g / e)), abs=1e-12), g
        opt.step()
        sched.step()


def test_sgdmom_and_adam_settings():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt, sched = make_optimizer(p, 'SGDmom', 0.1, 5e-4, 10)
    g = opt.param_groups[0]
    assert g['nesterov'] is False and g['momentum'] == 0.9 and g['weight_decay'] == 5e-4
    opt, sched = make_optimizer(p, 'Adam', 0.001, 5e-4, 10, steps_per_epoch=3)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]['betas'] == (0.9, 0.999)
    for _ in range(7):   # constant, bit for bit
        assert opt.param_groups[0]['lr'] == 0.001
        opt.step()
        sched.step()


def test_sgdmom_scheduler_sets_the_originals_lr_before_every_batch():
    """The original set lr = step_lr(lr_max, e + (i + 1) / n_b) before batch i of epoch e; the per-batch scheduler
    gives the same floats (==: the same expression), across both milestones and after a state_dict round trip."""
    n_b, lr = 7, 0.05
    opt, sched = make_optimizer([torch.nn.Parameter(torch.zeros(1))], 'SGDmom', lr, 5e-4, 110, steps_per_epoch=n_b)
    for e in range(107):
        if e == 50:
            state = sched.state_dict()
            opt, sched = make_optimizer([torch.nn.Parameter(torch.zeros(1))], 'SGDmom', lr, 5e-4, 110,
                                        steps_per_epoch=n_b)
            sched.load_state_dict(state)
            opt.param_groups[0]['lr'] = sched.get_last_lr()[0]
        for i in range(n_b):
            assert opt.param_groups[0]['lr'] == step_lr(lr, e + (i + 1) / n_b), (e, i)
            opt.step()
            sched.step()


# ---------------------------------------------------------------------------------------------------------------
# Run-folder names
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('extra, name', [
    ('--lr-max 0.1 --attack PGD --divergence KL',
     'PreActResNet18_PGD_linf_epoch110_eps8_wd0.0005_SGDmomlr0.1_divergenceKL_seed1'),
    ('--lr-max 0.1 --attack TRADES --TRADESlambda 6 --divergence KL',
     'PreActResNet18_TRADES6.0_linf_epoch110_eps8_wd0.0005_SGDmomlr0.1_divergenceKL_seed1'),
    ('--lr-max 0.05 --attack PGD --divergence LSE --clip_loss 0.4',
     'PreActResNet18_PGD_linf_epoch110_eps8_wd0.0005_SGDmomlr0.05_divergenceLSE_clip0.4_seed1'),
    ('--lr-max 0.05 --attack TRADES --TRADESlambda 6 --divergence LSE --clip_loss 0.3',
     'PreActResNet18_TRADES6.0_linf_epoch110_eps8_wd0.0005_SGDmomlr0.05_divergenceLSE_clip0.3_seed1'),
])
def test_readme_run_folder_names(extra, name):
    assert auto_name(train_cifar.get_args(README_FLAGS + extra.split())) == name


def test_other_name_components():
    args = train_cifar.get_args(['--attack', 'TRADES'])
    assert auto_name(args) == 'PreActResNet18_TRADES6_linf_epoch120_eps8_wd0.0005_SGDmomlr0.1_divergenceL1'
    args = train_cifar.get_args(['--activation', 'Softplus', '--divergence', 'inf', '--not_clip_clean',
                                 '--label_smoothing', '0.1', '--seed', '3', '--model', 'WideResNet'])
    assert auto_name(args) == ('WideResNet_Softplus_PGD_linf_epoch120_eps8_wd0.0005_SGDmomlr0.1_divergenceLinf_'
                               'notclean_labelsm0.1_seed3')


# ---------------------------------------------------------------------------------------------------------------
# Models: the original's state-dict keys
# ---------------------------------------------------------------------------------------------------------------

def bn_keys(prefix):
    return [f'{prefix}.{s}' for s in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')]


def test_preactresnet18_keys_and_size():
    model = create_without_ddpm_model('PreActResNet18', 10, 'GELU')
    expected = ['module.conv1.weight']
    for layer in range(1, 5):
        for i in range(2):
            p = f'module.layer{layer}.{i}'
            expected += bn_keys(f'{p}.bn1') + [f'{p}.conv1.weight'] + bn_keys(f'{p}.bn2') + [f'{p}.conv2.weight']
            if layer > 1 and i == 0:
                expected.append(f'{p}.shortcut.0.weight')
    expected += bn_keys('module.bn') + ['module.linear.weight', 'module.linear.bias']
    assert list(model.state_dict()) == expected and len(expected) == 107
    assert sum(p.numel() for p in model.parameters()) == 11_172_170


def test_wrn34_keys():
    keys = list(create_without_ddpm_model('WideResNet', 10, 'Swish', width_factor=2).state_dict())
    assert len(keys) == 191 and keys[0] == 'module.conv1.weight' and keys[-1] == 'module.fc.bias'
    assert keys[-8:-2] == bn_keys('module.bn1')[:5] + ['module.fc.weight'] or keys[-7:-2] == bn_keys('module.bn1')
    for g in (1, 2, 3):
        assert f'module.block{g}.layer.0.convShortcut.weight' in keys
        assert f'module.block{g}.layer.4.conv2.weight' in keys
    keys = list(create_without_ddpm_model('WideResNet', 10, 'Swish', width_factor=1).state_dict())
    assert len(keys) == 190 and 'module.block1.layer.0.convShortcut.weight' not in keys  # 16 -> 16 channels

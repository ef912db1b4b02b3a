"""without_DDPM/train_cifar.py and eval_cifar.py: distances, clip bound, losses, schedules, names, BN updates,
the first steps against a transcription of the original's sequence of operations, resume and bad input.

Every expected value is written down independently of the implementation: hand-worked formulas on tiny
tensors (Python floats and math.log), the clip bounds the original printed, the README's run-folder names, and
the original's training step transcribed operation by operation (`reference_step`).
"""
import argparse
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from script_runner import run_script
from synthetic import write_cifar10

from core.attacks.divergence import CEPGD, DivergencePGD, TradesDivergencePGD, cw_margin_loss
from core.divergences import clip_bound, distance, pgd_loss, smooth_targets, trades_loss
from core.models.without_ddpm import NormalizedNet, create_without_ddpm_model
from core.without_ddpm import auto_name, make_optimizer, make_train_attack, seed_all, step_lr, train_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'without_DDPM', 'train_cifar.py')
EVAL = os.path.join(ROOT, 'without_DDPM', 'eval_cifar.py')
sys.path.insert(0, os.path.join(ROOT, 'without_DDPM'))
import train_cifar  # noqa: E402

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
    assert cw_margin_loss(z, torch.tensor([0, 0])).item() == pytest.approx(2.0)


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
    assert sched is None and g['nesterov'] is False and g['momentum'] == 0.9 and g['weight_decay'] == 5e-4
    opt, sched = make_optimizer(p, 'Adam', 0.001, 5e-4, 10)
    assert sched is None and isinstance(opt, torch.optim.Adam) and opt.param_groups[0]['betas'] == (0.9, 0.999)


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


# ---------------------------------------------------------------------------------------------------------------
# Attacks: threat model, modes, BatchNorm updates
# ---------------------------------------------------------------------------------------------------------------

def ns(**kw):
    base = dict(attack='PGD', epsilon=8, pgd_alpha=2, attack_iters=2, restarts=1, norm='linf', divergence='LSE',
                TRADESlambda=6, label_smoothing=0, not_clip_clean=False)
    base.update(kw)
    return argparse.Namespace(**base)


class TinyNet(nn.Module):
    """A small BatchNorm network standing in for the backbones (the step, attack and BN tests are about the
    sequence of operations, not the architecture; the architectures are checked by their keys above)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))


def tiny_model():
    return NormalizedNet(TinyNet())


@pytest.fixture(scope='module')
def wrn():
    torch.manual_seed(0)
    return tiny_model()


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize('attack, restarts, expected', [('PGD', 1, 2 + 1), ('PGD', 2, 2 * 2 + 1),
                                                        ('TRADES', 1, 2), ('Standard', 1, 1)])
def test_bn_updates_per_batch(wrn, attack, restarts, expected):
    x, y = images()
    wrn.train()
    bn = wrn.module.bn
    before = int(bn.num_batches_tracked)
    args = ns(attack=attack, restarts=restarts)
    train_loss(wrn, make_train_attack(wrn, args, 10), x, y, args, 10, 0.0)
    assert int(bn.num_batches_tracked) - before == expected
    assert wrn.training and all(m.training for m in wrn.modules())
    assert all(p.requires_grad for p in wrn.parameters())


@pytest.mark.parametrize('make', [
    lambda m: DivergencePGD(m, 8 / 255, 2 / 255, 2, 1, 'linf', 'KL', 10),
    lambda m: DivergencePGD(m, 0.5, 0.2, 2, 2, 'l2', 'LSE', 10),
    lambda m: TradesDivergencePGD(m, 8 / 255, 2 / 255, 2, 'KL'),
    lambda m: CEPGD(m, 8 / 255, 2 / 255, 2, 2, 'linf', 'cw'),
    lambda m: CEPGD(m, 0.5, 0.2, 2, 1, 'l2', 'ce'),
])
def test_attack_invariants(wrn, make):
    x, y = images()
    wrn.eval()
    attack = make(wrn)
    x_adv = attack(x, y)
    delta = (x_adv - x).flatten(1)
    if attack.norm == 'linf':
        assert delta.abs().max() <= attack.eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= attack.eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in wrn.parameters())
    assert not wrn.training


# ---------------------------------------------------------------------------------------------------------------
# The first training steps against the original's sequence of operations, written out here
# ---------------------------------------------------------------------------------------------------------------

MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
STD = torch.tensor((0.2471, 0.2435, 0.2616)).view(3, 1, 1)


def ref_normalize(x):
    return (x - MEAN) / STD


def ref_distance(o, t, div):
    if div == 'LSE':
        return ((o - t) ** 2).sum(dim=1)
    # KL(t || o) as torch 1.8's KLDivLoss(input=log o, target=t): t (log t - log o) where t > 0, else 0
    terms = torch.where(t > 0, t * (torch.log(t.clamp_min(1e-45)) - torch.log(o)), torch.zeros_like(t))
    return terms.sum(dim=1)


def reference_step(net, opt, x, y, div, attack, lam, b, eps, alpha, iters, lr):
    """One batch of the original's train_cifar.py (ls = 0, L-inf, R = 1); `net` is the bare backbone."""
    f = lambda inp: net(ref_normalize(inp))  # noqa: E731
    opt.param_groups[0].update(lr=lr)
    opt.zero_grad()
    if attack == 'PGD':  # attack_pgd_divergence, in train mode
        t = F.one_hot(y, 10).float()
        delta = torch.zeros_like(x).uniform_(-eps, eps)
        delta = torch.max(torch.min(delta, 1 - x), 0 - x)
        delta.requires_grad = True
        for _ in range(iters):
            loss = ref_distance(F.softmax(f(x + delta), dim=1), t, div).mean()
            loss.backward()
            d = torch.clamp(delta.data + alpha * torch.sign(delta.grad.detach()), min=-eps, max=eps)
            delta.data = torch.max(torch.min(d, 1 - x), 0 - x)
            delta.grad.zero_()
        delta = delta.detach()
    else:  # attack_trades_divergence, in eval mode
        net.eval()
        c = F.softmax(f(x), dim=1).detach()
        delta = 0.001 * torch.randn(x.shape)
        delta = torch.max(torch.min(delta, 1 - x), 0 - x)
        for _ in range(iters):
            delta.requires_grad_()
            loss = ref_distance(F.softmax(f(x + delta), dim=1), c, div).mean()
            grad = torch.autograd.grad(loss, [delta])[0]
            d = torch.clamp(delta.detach() + alpha * torch.sign(grad), -eps, eps)
            delta = torch.max(torch.min(d, 1 - x), 0 - x)
        net.train()
        delta = delta.detach()
    t = F.one_hot(y, 10).float()
    p_a = F.softmax(f(torch.clamp(x + delta, 0, 1)), dim=1)
    if attack == 'PGD':
        loss = F.relu(ref_distance(p_a, t, div) - b).mean()
    else:
        p_c = F.softmax(f(x), dim=1)
        loss = F.relu(ref_distance(p_c, t, div) + lam * ref_distance(p_a, p_c, div) - b).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize('attack, div, r, lr', [('PGD', 'LSE', 0.4, 0.05), ('PGD', 'KL', 0.0, 0.1),
                                                ('TRADES', 'LSE', 0.3, 0.05), ('TRADES', 'KL', 0.0, 0.1)])
def test_first_steps_match_the_original_sequence(attack, div, r, lr):
    args = ns(attack=attack, divergence=div, attack_iters=2, lr_max=lr, optimizer='SGDmom', weight_decay=5e-4)
    b = clip_bound(r, div, 10)
    batches = [images(4, seed=s) for s in (1, 2, 3)]

    seed_all(0)
    model = tiny_model()
    opt, _ = make_optimizer(model.parameters(), 'SGDmom', lr, 5e-4, 110)
    train_attack = make_train_attack(model, args, 10)
    model.train()
    ours = []
    for i, (x, y) in enumerate(batches):
        opt.param_groups[0].update(lr=step_lr(lr, 0 + (i + 1) / 391))
        loss = train_loss(model, train_attack, x, y, args, 10, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.append(loss.item())

    seed_all(0)
    net = TinyNet()  # the same initial weights
    ref_opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    theirs = [reference_step(net, ref_opt, x, y, div, attack, 6, b, 8 / 255, 2 / 255, 2, lr) for x, y in batches]

    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours[0] > 0
    for (k, a), bb in zip(model.module.state_dict().items(), net.state_dict().values()):
        assert torch.allclose(a.float(), bb.float(), rtol=1e-4, atol=1e-6), k


# ---------------------------------------------------------------------------------------------------------------
# The scripts: files, resume, bad input, evaluation
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('cifar-data')
    write_cifar10(root, 8, 4)
    return root


def run(script, argv):
    return run_script(script, argv)


def tiny(data_root, *extra):
    return ['--model', 'WideResNet', '--width-factor', '1', '--wrn-depth', '10', '--epochs', '2', '--batch-size', '4',
            '--attack-iters', '1', '--data-dir', data_root, '--device', 'cpu', '--num-workers', '0',
            '--divergence', 'LSE', '--clip_loss', '0.4', '--seed', '1'] + list(extra)


FOLDER = os.path.join('trained_models', 'Triangle', 'CIFAR-10',  # the hidden --wrn-depth is not in the name
                      'WideResNet_PGD_linf_epoch2_eps8_wd0.0005_SGDmomlr0.1_divergenceLSE_clip0.4_seed1')


def test_run_files_resume_and_refusal(data_root, tmp_path, monkeypatch, capsys):
    full, part = tmp_path / 'full', tmp_path / 'part'
    for d in (full, part):
        d.mkdir()
    monkeypatch.chdir(full)
    assert run(TRAIN, tiny(data_root)) == 0
    out = capsys.readouterr()
    assert 'File name:  ' + os.path.basename(FOLDER) in out.out and 'Clip loss bound:  0.17777778208255768' in out.out
    files = sorted(os.listdir(FOLDER))
    assert files == ['model_best.pth', 'output.log', 'state-last.pt', 'test_acc_record.txt',
                     'test_robust_acc_record_KL.txt', 'test_robust_acc_record_new.txt'] or \
        files == ['output.log', 'state-last.pt', 'test_acc_record.txt', 'test_robust_acc_record_KL.txt',
                  'test_robust_acc_record_new.txt']  # model_best only once min(robust) > 0
    assert np.loadtxt(os.path.join(FOLDER, 'test_acc_record.txt')).shape == (2,)
    log = open(os.path.join(FOLDER, 'output.log')).read().splitlines()
    assert log[0].startswith('[') and '] - Namespace(model=' in log[0]
    assert log[1].endswith('Epoch \t Test Acc \t Test Rob. Acc (CE-PGD / LSE-PGD)')
    assert log[2].split('] - ')[1].startswith('0 \t ') and len(log) == 4
    state = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)

    # an existing run is refused, nothing touched
    before = {f: os.path.getmtime(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER)}
    assert run(TRAIN, tiny(data_root)) == 2
    assert 'already holds files' in capsys.readouterr().err
    assert before == {f: os.path.getmtime(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER)}

    # stop after epoch 0, resume: the same weights and records as the uninterrupted run
    monkeypatch.chdir(part)
    assert run(TRAIN, tiny(data_root, '--stop-after', '0')) == 0
    assert run(TRAIN, tiny(data_root, '--resume', '--test_epsilon', '4')) == 2  # flags differ
    assert 'test_epsilon' in capsys.readouterr().err
    assert run(TRAIN, tiny(data_root, '--resume')) == 0
    resumed = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)
    for k, v in state['model'].items():
        assert torch.equal(v, resumed['model'][k]), k
    assert resumed['records'] == state['records']
    assert run(TRAIN, tiny(data_root, '--resume')) == 2  # finished
    assert 'already completed' in capsys.readouterr().err

    # eval_cifar.py on the run's checkpoint (written here if model_best was not)
    ckpt = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)['model']
    torch.save({'state_dict': ckpt, 'test_acc': 0.0}, tmp_path / 'model_best.pth')
    assert run(EVAL, ['--out-dir', tmp_path, '--data-dir', data_root, '--model', 'WideResNet', '--width-factor', '1',
                      '--wrn-depth', '10', '--device', 'cpu', '--num-workers', '0', '--version', 'none']) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    clean = float(out[0].split('Clean acc:  ')[1])
    ce = float(out[1].split('PGD-10 (1 restart, step 2, CE loss) acc:  ')[1])
    cw = float(out[2].split('PGD-10 (1 restart, step 2, CW loss) acc:  ')[1])
    assert 0 <= ce <= clean and 0 <= cw <= clean


@pytest.mark.parametrize('extra, message', [
    (['--model', 'ResNet50'], 'invalid choice'),
    (['--divergence', 'foo'], 'unknown divergence'),
    (['--optimizer', 'SGD'], 'invalid choice'),
    (['--dataset', 'SVHN'], 'invalid choice'),
    (['--activation', 'Mish'], 'invalid choice'),
    (['--epsilon', '-1'], '--epsilon -1: must be >= 0'),
    (['--attack', 'TRADES', '--norm', 'l2'], 'no L2 step'),
    (['--activation', 'GELU'], 'WideResNet has ReLU, Swish, Softplus only'),
    (['--resume'], 'state-last.pt not found'),
])
def test_bad_input_exits_2_and_writes_nothing(data_root, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    assert run(TRAIN, tiny(data_root, *extra)) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_missing_data_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('core.data.common._download', lambda *a: (_ for _ in ()).throw(OSError('offline')))
    assert run(TRAIN, tiny(tmp_path / 'nowhere')) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: cifar10 ') and 'data not found' in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []

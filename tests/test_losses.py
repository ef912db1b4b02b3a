"""TRADES-KL, SCORE-LSE and MART outer losses against hand-worked 2x3 numbers, and plain TRADES's L2 step worked
by hand (the inner maximisations' invariants and the reference's update counts are in tests/test_inner_max.py)."""
import math

import pytest
import torch
import torch.nn as nn
from composites import trades_loss_plain

from core.losses.divergences import kl_div_batchmean, squared_error_sum
from core.losses.outer import mart_outer_loss, score_lse_loss, trades_kl_loss
from core.utils.errors import UserError

# ------------------------------------------------------------------------------------------------------
# Hand arithmetic on plain Python lists (math.log / math.exp only)
# ------------------------------------------------------------------------------------------------------

Z_NAT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
Z_ADV = [[0.5, 2.5, 1.0], [1.0, 0.0, 2.0]]
Y = [1, 0]          # sample 0 is classified correctly (clean and adversarial), sample 1 is not
P_SOFT = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]   # contains a zero: 0 log 0 = 0


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):  # sum_k p_k log(p_k / q_k), 0 log 0 = 0
    return sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q) if pk > 0)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


LABELS = torch.tensor(Y)


def test_kl_div_batchmean_2x3():
    expected = (kl(P_SOFT[0], softmax(Z_NAT[0])) + kl(P_SOFT[1], softmax(Z_NAT[1]))) / 2
    assert kl_div_batchmean(t(P_SOFT), t(Z_NAT)).item() == pytest.approx(expected, rel=1e-12)


def test_squared_error_sum_2x3():
    expected = sum((q - p) ** 2 for i in range(2) for q, p in zip(softmax(Z_NAT[i]), P_SOFT[i]))
    assert squared_error_sum(t(P_SOFT), t(Z_NAT)).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('ls', [0.0, 0.1])
def test_trades_kl_loss_2x3(ls):
    beta = 6.0
    nat = 0.0
    for i in range(2):
        logp = [math.log(v) for v in softmax(Z_NAT[i])]
        nat += (1 - ls) * (-logp[Y[i]]) + ls * sum(-v for v in logp) / 3
    nat /= 2
    rob = (kl(softmax(Z_NAT[0]), softmax(Z_ADV[0])) + kl(softmax(Z_NAT[1]), softmax(Z_ADV[1]))) / 2
    loss, metrics = trades_kl_loss(t(Z_NAT), t(Z_ADV), LABELS, beta=beta, ls=ls)
    assert loss.item() == pytest.approx(nat + beta * rob, rel=1e-12)
    assert metrics == {'loss': pytest.approx(nat + beta * rob), 'clean_acc': 0.5, 'adversarial_acc': 0.5}


def test_trades_kl_loss_soft_labels_2x3():
    beta = 2.0
    nat = (kl(P_SOFT[0], softmax(Z_NAT[0])) + kl(P_SOFT[1], softmax(Z_NAT[1]))) / 2
    rob = (kl(softmax(Z_NAT[0]), softmax(Z_ADV[0])) + kl(softmax(Z_NAT[1]), softmax(Z_ADV[1]))) / 2
    loss, metrics = trades_kl_loss(t(Z_NAT), t(Z_ADV), None, beta=beta, ls=0.1, soft_labels=t(P_SOFT))
    assert loss.item() == pytest.approx(nat + beta * rob, rel=1e-12)
    assert metrics['clean_acc'] == -1 and metrics['adversarial_acc'] == -1


def _lse_hand(target, beta, clip):
    nat = rob = 0.0
    for i in range(2):
        qn, qa = softmax(Z_NAT[i]), softmax(Z_ADV[i])
        nat += sum((a - b) ** 2 for a, b in zip(qn, target[i]))
        rob += max(sum((a - b) ** 2 for a, b in zip(qa, qn)) - clip, 0.0)
    return nat / 2 + beta * rob / 2


def _rob_per_sample(i):
    return sum((a - b) ** 2 for a, b in zip(softmax(Z_ADV[i]), softmax(Z_NAT[i])))


@pytest.mark.parametrize('ls', [0.0, 0.2])
def test_score_lse_loss_2x3(ls):
    # SCORE target: 1 - ls on the true class and ls/(K-1) = ls/2 elsewhere (NOT the 6.1 smoothing)
    target = [[ls / 2, 1 - ls, ls / 2], [1 - ls, ls / 2, ls / 2]]
    loss, metrics = score_lse_loss(t(Z_NAT), t(Z_ADV), LABELS, beta=3.0, ls=ls, num_classes=3)
    assert loss.item() == pytest.approx(_lse_hand(target, 3.0, 0.0), rel=1e-12)
    assert metrics['clean_acc'] == 0.5 and metrics['adversarial_acc'] == 0.5


def test_score_lse_loss_clip_value_2x3():
    r0, r1 = _rob_per_sample(0), _rob_per_sample(1)
    clip = (r0 + r1) / 2          # between the two: one sample is clipped to 0, the other is not
    assert min(r0, r1) < clip < max(r0, r1)
    target = [[0.05, 0.9, 0.05], [0.9, 0.05, 0.05]]
    loss, _ = score_lse_loss(t(Z_NAT), t(Z_ADV), LABELS, beta=4.0, ls=0.1, num_classes=3, clip_value=clip)
    expected = _lse_hand(target, 4.0, clip)
    assert expected == pytest.approx(_lse_hand(target, 0.0, 0.0) + 4.0 * (max(r0, r1) - clip) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_score_lse_loss_soft_labels_2x3():
    loss, metrics = score_lse_loss(t(Z_NAT), t(Z_ADV), None, beta=2.0, ls=0.3, num_classes=3, soft_labels=t(P_SOFT))
    assert loss.item() == pytest.approx(_lse_hand(P_SOFT, 2.0, 0.0), rel=1e-12)
    assert metrics['clean_acc'] == -1 and metrics['adversarial_acc'] == -1


def test_mart_outer_loss_2x3():
    beta = 5.0
    ce = lse_adv = rob = 0.0
    for i in range(2):
        pn, pa = softmax(Z_NAT[i]), softmax(Z_ADV[i])
        ce += -math.log(pa[Y[i]])
        y_hat = max((k for k in range(3) if k != Y[i]), key=lambda k: pa[k])
        lse_adv += -math.log(1.0001 - pa[y_hat] + 1e-12)
        kl_i = sum(pn[k] * (math.log(pn[k]) - math.log(pa[k] + 1e-12)) for k in range(3))
        rob += kl_i * (1.0000001 - pn[Y[i]])
    expected = ce / 2 + lse_adv / 2 + beta * rob / 2
    loss, metrics = mart_outer_loss(t(Z_NAT), t(Z_ADV), LABELS, beta=beta)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert metrics['clean_acc'] == 0.5 and metrics['adversarial_acc'] == 0.5


def test_robust_terms_differentiate_through_both_arguments():
    # gradcheck compares autograd with finite differences of the value: it fails if z_nat were detached
    # anywhere in the robust term (TRADES: "gradients through both arguments").
    zn, za = t(Z_NAT).requires_grad_(), t(Z_ADV).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: trades_kl_loss(a, b, LABELS, beta=6.0)[0], (zn, za))
    assert torch.autograd.gradcheck(lambda a, b: score_lse_loss(a, b, LABELS, beta=6.0, ls=0.1)[0], (zn, za))
    assert torch.autograd.gradcheck(lambda a, b: mart_outer_loss(a, b, LABELS, beta=6.0)[0], (zn, za))


# ----------------------------------------------------------------------------------------------------------------
# Plain-Trainer TRADES with --attack l2-pgd, one step worked out by hand on a linear model
# ----------------------------------------------------------------------------------------------------------------

def test_plain_trades_l2_one_step_by_hand():
    """Linear model z = W vec(x) (float64, no BN), T = 1: for KL_sum(p || softmax(z)) the gradient w.r.t. z is
    softmax(z) - p, so the step on delta is d0 + 2 eps * g / |g| with g = W^T (q - p) per sample (ascending KL)."""
    torch.manual_seed(0)
    W = torch.randn(3, 4, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(W)
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64) * 0.5 + 0.25
    y = torch.tensor([0, 2])
    eps, beta = 0.3, 2.0

    torch.manual_seed(7)
    loss, metrics = trades_loss_plain(model, x, y, epsilon=eps, perturb_steps=1, beta=beta, attack='l2-pgd')
    assert model.training

    torch.manual_seed(7)
    torch.randn(x.shape)                                  # the L-inf start, drawn and unused
    d0 = (0.001 * torch.randn(x.shape)).double()          # float32 CPU draw, as the reference
    xf = x.view(2, 4)
    p = torch.softmax(xf @ W.T, 1)
    q = torch.softmax((xf + d0.view(2, 4)) @ W.T, 1)
    g = (q - p) @ W                                       # d KL_sum / d delta, per sample
    d1 = d0.view(2, 4) + 2 * eps * g / g.norm(dim=1, keepdim=True)
    d1 = torch.clamp(xf + d1, 0, 1) - xf
    norms = d1.norm(dim=1, keepdim=True)
    d1 = torch.where(norms > eps, d1 * eps / (norms + 1e-7), d1)
    x_adv = torch.clamp(xf + d1, 0, 1)
    z_nat, z_adv = xf @ W.T, x_adv @ W.T
    pn, pa = torch.softmax(z_nat, 1), torch.softmax(z_adv, 1)
    ce = -torch.log_softmax(z_nat, 1)[torch.arange(2), y].mean()
    kl_sum = (pn * (torch.log(pn) - torch.log(pa))).sum()
    # rel 1e-7: the first step is taken on the float32 start delta (its gradient and update are float32)
    assert loss.item() == pytest.approx((ce + beta * kl_sum / 2).item(), rel=1e-7)
    assert metrics['adversarial_acc'].item() == (z_adv.argmax(1) == y).double().mean().item()
    assert kl_sum.item() > 1e-3 and not torch.allclose(x_adv, xf)        # the step did move, and it counts


def test_plain_trainer_accepts_l2_trades_and_refuses_l2_mart():
    from core.run.parser import parser_train
    from core.training.objectives import resolve
    base = ['--desc', 'x', '--tau', '0', '--beta', '1', '--attack', 'l2-pgd']
    assert resolve(parser_train().parse_args(base), weight_averaging=False).name == 'trades-plain'
    with pytest.raises(UserError, match='MART'):
        resolve(parser_train().parse_args(base + ['--mart']), weight_averaging=False)

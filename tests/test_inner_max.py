"""TRADES-KL, SCORE-LSE and MART inner maximisations on a tiny conv net: ball, box and mode invariants, the
forward / running-stat update counts of the reference, its RNG stream and its backward-and-zero idiom (the outer
losses' hand-worked numbers are in tests/test_losses.py)."""
import pytest
import torch
import torch.nn as nn
from composites import inner_maximize, mart_loss, trades_loss, trades_loss_LSE

from core.attacks.trades import MartInnerMax, TradesInnerMax, ctx_batch_stats
from core.losses.outer import score_lse_loss, trades_kl_loss
from core.training.weight_averaging import bn_momentum_trick
from core.utils.errors import UserError

# ------------------------------------------------------------------------------------------------------
# Inner maximisation on a tiny conv net
# ------------------------------------------------------------------------------------------------------

def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def batch(b=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 8, 8, generator=g), torch.randint(0, 3, (b,), generator=g)


def bn_state(model):
    return [(m.training, getattr(m, 'track_running_stats', None)) for m in model.modules()]


def bn_buffers(model):
    return [b.clone() for n, b in model.named_buffers()]


@pytest.mark.parametrize('divergence', ['kl', 'lse'])
@pytest.mark.parametrize('attack,eps', [('linf-pgd', 8 / 255), ('l2-pgd', 0.25)])
def test_inner_max_ball_box_modes_and_no_param_grad(divergence, attack, eps):
    model, (x, _) = tiny_net(), batch()
    x[0, :, :2] = 0.0   # pixels on the box boundary
    x[1, :, :2] = 1.0
    model.eval()
    model[4].track_running_stats = False
    before, buffers = bn_state(model), bn_buffers(model)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    x_adv = inner_maximize(model, x, p, divergence, attack, eps=eps, step=2 / 255, iters=3)
    d = (x_adv - x).view(len(x), -1)
    if attack == 'linf-pgd':
        assert d.abs().max() <= eps + 1e-6
    else:
        assert (d.norm(dim=1) <= eps * (1 + 1e-5)).all()
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    assert not x_adv.requires_grad and d.abs().max() > 0
    assert bn_state(model) == before
    assert all(torch.equal(a, b) for a, b in zip(buffers, bn_buffers(model)))   # no running-stat update
    assert all(q.grad is None for q in model.parameters())


def test_inner_max_l2_zero_gradient_samples_stay_in_ball():
    # A constant model: every per-sample gradient is zero, so each gets a fresh N(0,1) direction.
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    nn.init.zeros_(model[1].weight)
    x = batch(4)[0]
    x_adv = TradesInnerMax(model, 'kl', 'l2-pgd', eps=0.5, iters=4)(x, torch.full((4, 3), 1 / 3))
    norms = (x_adv - x).view(4, -1).norm(dim=1)
    assert torch.isfinite(x_adv).all() and (norms <= 0.5 * (1 + 1e-5)).all() and (norms > 0.01).all()


def test_inner_max_restores_modes_on_exception_and_rejects_unknown_attack():
    model, (x, _) = tiny_net(), batch()
    model.eval()
    before = bn_state(model)
    with pytest.raises(RuntimeError):   # a target of the wrong width fails inside the loop
        inner_maximize(model, x, torch.full((6, 5), 0.2), 'lse', 'linf-pgd', iters=2)
    assert bn_state(model) == before
    for bad in ['fgsm', 'linf-apgd']:
        with pytest.raises(UserError):   # a ValueError subclass
            TradesInnerMax(model, 'kl', bad)
    with pytest.raises(UserError):
        mart_loss(model, x, batch()[1], attack='l2-pgd')
    with pytest.raises(ValueError):
        TradesInnerMax(model, 'js')


def test_mart_inner_max_eval_mode_and_ball():
    model, (x, y) = tiny_net(), batch()
    model.train()
    buffers = bn_buffers(model)
    x_adv = MartInnerMax(model, eps=8 / 255, step=2 / 255, iters=3)(x, y)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, bn_buffers(model)))
    assert all(q.grad is None for q in model.parameters())


# ------------------------------------------------------------------------------------------------------
# Forward-pass and running-stat update counts of the reference
# ------------------------------------------------------------------------------------------------------

class Recorder:
    """Forward hook on the whole model: (train mode, BN tracking, input) of every forward."""

    def __init__(self, model):
        self.calls = []
        bn = model[1]
        model.register_forward_hook(lambda m, inp, out: self.calls.append((m.training, bn.track_running_stats,
                                                                            inp[0].detach().clone())))


def _loss_fn(name):
    kw = dict(step_size=2 / 255, epsilon=8 / 255, perturb_steps=3, beta=6.0)
    return {
        'trades': lambda m, x, y: trades_loss(m, x, y, **kw),
        'lse': lambda m, x, y: trades_loss_LSE(m, x, y, num_classes=3, **kw),
        'mart': lambda m, x, y: mart_loss(m, x, y, **kw),
    }[name]


@pytest.mark.parametrize('name', ['trades', 'lse', 'mart'])
def test_forward_and_running_stat_counts(name):
    model, (x, y) = tiny_net(), batch()
    model.train()
    rec = Recorder(model)
    loss, metrics = _loss_fn(name)(model, x, y)
    T = 3
    modes = [(c[0], c[1]) for c in rec.calls]
    if name == 'mart':   # T attack forwards in eval mode (running stats used), then 2 train-mode forwards
        assert modes == [(False, True)] * T + [(True, True)] * 2
        assert torch.equal(rec.calls[-2][2], x) and not torch.equal(rec.calls[-1][2], x)   # z_nat, then z_adv
    else:                # z_nat (its softmax is the target), T attack forwards with batch statistics and no
        assert modes == [(True, True)] + [(True, False)] * T + [(True, True)]   # update, then z_adv
        assert torch.equal(rec.calls[0][2], x) and not torch.equal(rec.calls[-1][2], x)
    assert all(int(m.num_batches_tracked) == 2 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(q.grad is None for q in model.parameters())   # nothing but the caller's backward writes .grad
    loss.backward()
    assert all(q.grad is not None for q in model.parameters())
    assert set(metrics) == {'loss', 'clean_acc', 'adversarial_acc'} and metrics['loss'] == loss.item()


@pytest.mark.parametrize('fn', [trades_loss, trades_loss_LSE])
def test_cutmix_soft_labels_take_the_place_of_the_target(fn):
    model, (x, _) = tiny_net(), batch()
    soft = torch.softmax(torch.randn(6, 3), 1)
    rec = Recorder(model)
    kw = dict(num_classes=3) if fn is trades_loss_LSE else {}
    _, metrics = fn(model, x, soft, step_size=2 / 255, epsilon=8 / 255, perturb_steps=3, beta=6.0,
                    use_cutmix=True, **kw)
    assert [(c[0], c[1]) for c in rec.calls] == [(True, True)] + [(True, False)] * 3 + [(True, True)]
    assert metrics['clean_acc'] == -1 and metrics['adversarial_acc'] == -1


def test_first_step_momentum_trick_leaves_adversarial_batch_stats():
    # BN momentum trick: at s = 0 the BN momentum is 1.0; the natural forward sets the running stats, the adversarial
    # forward overwrites them, so they end as the adversarial batch's statistics (unbiased variance).
    model, (x, y) = tiny_net(), batch()
    model.train()
    bn_momentum_trick(model, 0)
    seen = []
    model[1].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    trades_loss(model, x, y, step_size=2 / 255, epsilon=8 / 255, perturb_steps=2, beta=6.0)
    last = seen[-1]
    assert torch.allclose(model[1].running_mean, last.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(model[1].running_var, last.var(dim=(0, 2, 3), unbiased=True), atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# RNG stream and the reference's backward-and-zero idiom (docs/differences.md item 2)
# ------------------------------------------------------------------------------------------------------

def test_initial_noise_comes_from_the_cpu_generator():
    model, (x, _) = tiny_net(), batch()
    p = torch.full((6, 3), 1 / 3)
    torch.manual_seed(7)
    x_adv = inner_maximize(model, x, p, 'kl', 'linf-pgd', eps=0.1, iters=0)
    after = torch.rand(1)
    torch.manual_seed(7)
    expected = torch.clamp(x + torch.empty(x.shape, dtype=torch.float32).uniform_(-0.1, 0.1), 0, 1)
    assert torch.equal(x_adv, expected) and torch.equal(after, torch.rand(1))
    torch.manual_seed(7)   # L2: the uniform draw is consumed first (and discarded), then 0.001 * N(0, 1)
    x_adv = inner_maximize(model, x, p, 'kl', 'l2-pgd', eps=0.1, iters=0)
    torch.manual_seed(7)
    torch.empty(x.shape).uniform_(-0.1, 0.1)
    assert torch.equal(x_adv, torch.clamp(x + 0.001 * torch.randn(x.shape), 0, 1))


def _track_bn_stats(model, track_stats):
    """The reference's `track_bn_stats`: switch `track_running_stats` of every BatchNorm (False: batch statistics,
    nothing updated)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = track_stats


def _spec_trades(model, x, y, eps, step, iters, beta, attack, lse, ls=0.1):
    """TRADES-KL / SCORE-LSE written out with the reference's idiom: loss.backward() into the parameters too, an SGD
    optimizer over delta, then zero_grad before the outer loss."""
    div = ((lambda p, z: torch.sum((torch.softmax(z, 1) - p) ** 2)) if lse
           else (lambda p, z: nn.KLDivLoss(reduction='batchmean')(torch.log_softmax(z, 1), p)))
    model.train()
    _track_bn_stats(model, False)
    x_adv = torch.clamp(x + torch.FloatTensor(x.shape).uniform_(-eps, eps), 0.0, 1.0)
    p_nat = torch.softmax(model(x), 1).detach()
    if attack == 'linf-pgd':
        for _ in range(iters):
            x_adv.requires_grad_()
            grad = torch.autograd.grad(div(p_nat, model(x_adv)), [x_adv])[0]
            x_adv = torch.clamp(torch.min(torch.max(x_adv.detach() + step * torch.sign(grad), x - eps), x + eps), 0, 1)
    else:
        delta = (0.001 * torch.randn(x.shape)).requires_grad_(True)
        opt = torch.optim.SGD([delta], lr=eps / iters * 2)
        for _ in range(iters):
            opt.zero_grad()
            (-1 * div(p_nat, model(x + delta))).backward()
            norms = delta.grad.view(len(x), -1).norm(p=2, dim=1)
            delta.grad.div_(norms.view(-1, 1, 1, 1))
            opt.step()
            delta.data.add_(x).clamp_(0, 1).sub_(x)
            delta.data.renorm_(p=2, dim=0, maxnorm=eps)
        x_adv = x + delta.detach()
    _track_bn_stats(model, True)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.zero_grad()
    z_nat, z_adv = model(x), model(x_adv)
    if lse:
        return score_lse_loss(z_nat, z_adv, y, beta=beta, ls=ls, num_classes=3)[0]
    return trades_kl_loss(z_nat, z_adv, y, beta=beta, ls=ls)[0]


@pytest.mark.parametrize('attack,eps,lse', [('linf-pgd', 8 / 255, False), ('l2-pgd', 0.5, False),
                                            ('l2-pgd', 0.5, True), ('linf-pgd', 8 / 255, True)])
def test_composites_equal_the_spec_algorithm_bitwise(attack, eps, lse):
    (x, y), kw = batch(), dict(step_size=2 / 255, epsilon=eps, perturb_steps=3, beta=6.0, attack=attack)
    ref, new = tiny_net(), tiny_net()
    torch.manual_seed(3)
    loss_ref = _spec_trades(ref, x, y, eps, 2 / 255, 3, 6.0, attack, lse)
    loss_ref.backward()
    torch.manual_seed(3)
    loss_new = (trades_loss_LSE(new, x, y, num_classes=3, **kw) if lse else trades_loss(new, x, y, **kw))[0]
    loss_new.backward()
    assert torch.equal(loss_ref, loss_new)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ref.parameters(), new.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref.buffers(), new.buffers()))


def _reference_order(model, x, y, divergence, beta, attack):
    """The reference's sequence: a target forward and the attack with batch statistics (no BN update),
    then z_nat and z_adv in train mode."""
    with ctx_batch_stats(model):
        with torch.no_grad():
            p = torch.softmax(model(x), dim=1)
        x_adv = inner_maximize(model, x, p, divergence, attack, eps=8 / 255, step=2 / 255, iters=3)
    model.train()
    logits_nat, logits_adv = model(x), model(x_adv)
    if divergence == 'kl':
        return trades_kl_loss(logits_nat, logits_adv, y, beta=beta, ls=0.1)[0]
    return score_lse_loss(logits_nat, logits_adv, y, beta=beta, ls=0.0, num_classes=3, clip_value=0.0)[0]


@pytest.mark.parametrize('divergence', ['kl', 'lse'])
@pytest.mark.parametrize('attack', ['linf-pgd', 'l2-pgd'])
@pytest.mark.parametrize('momentum_step', [0, 1])
def test_z_nat_first_is_bit_identical_to_the_reference_order(divergence, attack, momentum_step):
    """Item 14: taking the target from z_nat (one forward less) changes no bit of the loss, the parameter
    gradients, the BatchNorm buffers (updated twice, z_nat then z_adv) or the RNG stream."""
    x, y = batch(8)
    results = []
    for fn in (_reference_order, None):
        model = tiny_net()
        model.train()
        bn_momentum_trick(model, momentum_step)  # momentum 1.0 at step 0, then 0.01
        torch.manual_seed(5)
        if fn is None:
            composite = trades_loss if divergence == 'kl' else trades_loss_LSE
            kw = {} if divergence == 'kl' else dict(num_classes=3, label_smoothing=0.0)
            loss = composite(model, x, y, step_size=2 / 255, epsilon=8 / 255, perturb_steps=3, beta=6.0,
                             attack=attack, **kw)[0]
        else:
            loss = fn(model, x, y, divergence, 6.0, attack)
        loss.backward()
        after = torch.rand(1)  # the next draw of the CPU stream
        results.append((loss.detach(), [q.grad for q in model.parameters()], list(model.buffers()), after))
    (l0, g0, b0, r0), (l1, g1, b1, r1) = results
    assert torch.equal(l0, l1) and torch.equal(r0, r1)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))
    assert len(b0) == 6 and all(torch.equal(a, b) for a, b in zip(b0, b1))

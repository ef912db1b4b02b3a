"""Weight averaging: the decay schedule, the in-place update, BN statistics copied (not aliased),
the step counting and the first-step BN-momentum trick."""
import copy

import pytest
import torch
import torch.nn as nn

from core.training.schedules import update_steps
from core.training.weight_averaging import EMA, bn_momentum_trick, ema_decay, ema_update, update_bn, warmup_steps


@pytest.mark.parametrize('step,expected', [
    (979, 0.0),                  # before the warm-up ends the WA weights are copies
    (980, 1 / 10),               # d = 0
    (981, 2 / 11),               # d = 1
    (980 + 1789, 1790 / 1799),   # still below tau
    (980 + 1790, 0.995),         # (1 + 1790) / (10 + 1790) = 0.995 = tau
    (980 + 5000, 0.995),
])
def test_ema_decay_schedule_integer_warmup(step, expected):
    assert ema_decay(step, 980.0, 0.995) == pytest.approx(expected, rel=1e-12)


def test_ema_decay_first_steps_and_fractional_warmup():
    assert ema_decay(0, 0, 0.995) == pytest.approx(0.1)
    assert ema_decay(1, 0, 0.995) == pytest.approx(2 / 11)
    assert ema_decay(981, 980.5, 0.995) == pytest.approx(1.5 / 10.5)
    assert ema_decay(980, 980.5, 0.995) == 0
    assert ema_decay(0, 10, 0.995) == 0          # 10 + d == 0: no division, and factor 0
    assert ema_decay(5, 0, 0.05) == pytest.approx(0.05)   # tau caps the dynamic term


def _pair():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    wa = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for b in model.buffers():
            b.add_(1)
    return wa, model


def test_ema_update_equals_hand_formula_and_skips_buffers():
    wa, model = _pair()
    old = [p.detach().clone() for p in wa.parameters()]
    buffers = [b.clone() for b in wa.buffers()]
    decay = ema_update(wa, model, global_step=5, decay_rate=0.999, warmup_steps=0)   # d = 5: 6/15
    assert decay == pytest.approx(0.4)
    for a, b, c in zip(wa.parameters(), old, model.parameters()):
        for va, vb, vc in zip(a.flatten().tolist(), b.flatten().tolist(), c.flatten().tolist()):
            assert va == pytest.approx(vb * 0.4 + vc * 0.6, abs=1e-6)
        assert a.dtype == torch.float32 and a.grad is None
    assert all(torch.equal(a, b) for a, b in zip(wa.buffers(), buffers))


def test_ema_update_before_warmup_copies_exactly():
    wa, model = _pair()
    assert ema_update(wa, model, global_step=3, decay_rate=0.995, warmup_steps=980.0) == 0
    assert all(torch.equal(a, b) for a, b in zip(wa.parameters(), model.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(wa.parameters(), model.parameters()))


def test_update_bn_copies_without_aliasing():
    wa, model = _pair()
    model.train()
    update_bn(wa, model)
    assert not wa.training and not model.training
    bn_wa, bn = wa[1], model[1]
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        assert torch.equal(getattr(bn_wa, name), getattr(bn, name))
    with torch.no_grad():
        bn.running_mean.add_(5.0)
        bn.running_var.mul_(3.0)
        bn.num_batches_tracked += 7
    assert not torch.equal(bn_wa.running_mean, bn.running_mean)
    assert not torch.equal(bn_wa.running_var, bn.running_var)
    assert int(bn_wa.num_batches_tracked) != int(bn.num_batches_tracked)


def test_update_bn_rejects_mismatched_models():
    with pytest.raises(ValueError):
        update_bn(nn.Sequential(nn.BatchNorm1d(2)), nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2)))


def test_update_steps_and_warmup():
    assert update_steps('cifar10s', 512) == 50000 // 512 + 1 == 98
    assert update_steps('cifar100', 500) == 101          # bs divides N: still floor + 1 (docs/differences.md item 15)
    assert update_steps('svhns', 512) == 73257 // 512 + 1 == 144
    assert update_steps('tiny-imagenet', 512) == 100000 // 512 + 1 == 196
    assert warmup_steps(400, 98) == pytest.approx(980.0)
    assert isinstance(warmup_steps(400, 98), float)
    assert warmup_steps(10, 98) == pytest.approx(24.5)


def test_bn_momentum_trick():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Linear(2, 2), nn.BatchNorm1d(2))
    bns = [model[1], model[3]]
    bn_momentum_trick(model, 2)
    assert [m.momentum for m in bns] == [0.1, 0.1]
    bn_momentum_trick(model, 0)
    assert [m.momentum for m in bns] == [1.0, 1.0]
    bn_momentum_trick(model, 1)
    assert [m.momentum for m in bns] == [0.01, 0.01]
    bn_momentum_trick(model, 5)
    assert [m.momentum for m in bns] == [0.01, 0.01]


def test_ema_class_is_the_functions():
    wa, model = _pair()
    ema = EMA(wa, tau=0.995, warmup_steps=980.0)
    assert ema.decay(981) == pytest.approx(2 / 11)
    assert ema.update(model, 10) == 0
    assert all(torch.equal(a, b) for a, b in zip(wa.parameters(), model.parameters()))


def test_ema_around_the_steps_and_across_a_resume():
    """before_step is the BN trick on the training model; after a resume at global step g >= 1 the momentum is
    the trick's 0.01 (a fresh model has 0.1); the averaged weights round-trip through state_dict."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = EMA(copy.deepcopy(model), tau=0.995)
    ema.before_step(model, 0)
    assert model[1].momentum == 1.0 and ema.wa_model[1].momentum == 0.1    # the averaged model is untouched
    ema.before_step(model, 1)
    assert model[1].momentum == 0.01
    fresh = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema.restore_bn_momentum(fresh, 0)
    assert fresh[1].momentum == 0.1                                         # no step taken: nothing to restore
    ema.restore_bn_momentum(fresh, 7)
    assert fresh[1].momentum == 0.01
    with torch.no_grad():
        ema.wa_model[0].weight.fill_(0.25)
    other = EMA(copy.deepcopy(model), tau=0.995)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.wa_model[0].weight, torch.full_like(model[0].weight, 0.25))

"""Attack gradients under fp16 / bf16 autocast on CPU (GPU readiness, items 1 and 2).

- `input_gradient` in float32 is one plain `autograd.grad`, bit for bit;
- under fp16 and bf16 autocast, for each attack objective (TRADES KL batchmean, SCORE's squared error, MART's
  mean cross-entropy, the plain trainer's KL sum), the input gradient has no zeros and its signs agree with the
  float32 gradient's (fp16 keeps 10 mantissa bits, bf16 7, so a few signs of near-zero entries may flip),
  while the plain fp16 backward loses a large part of the KL gradient to underflow;
- the SCORE targets are float32 whatever the logits' dtype: 0.9 stays the float32 0.9.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks.trades import ctx_batch_stats
from core.attacks.utils import input_gradient, linf_sign_ascent
from core.losses.divergences import kl_div_batchmean, squared_error_sum
from core.losses.divergences import smooth_targets as lse_targets
from core.losses.outer import score_lse_loss


def tiny_swish_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope='module')
def setting():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on shared cores
    yield _setting()
    torch.set_num_threads(threads)


def _setting():
    model = tiny_swish_net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    with ctx_batch_stats(model), torch.no_grad():
        p = F.softmax(model(x), dim=1)
    z = (x + torch.empty(x.shape).uniform_(-8 / 255, 8 / 255, generator=g)).clamp(0, 1)  # the random start
    objectives = {'trades-kl': lambda lg: kl_div_batchmean(p, lg), 'score-lse': lambda lg: squared_error_sum(p, lg),
                  'mart-ce': lambda lg: F.cross_entropy(lg, y),
                  'plain-kl-sum': lambda lg: F.kl_div(F.log_softmax(lg, dim=1), p, reduction='sum')}
    return model, z, objectives


def plain_grad(model, objective, z):
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad(objective(model(z)), [z])[0]


def test_float32_input_gradient_is_plain_autograd(setting):
    model, z, objectives = setting
    with ctx_batch_stats(model):
        for objective in objectives.values():
            assert torch.equal(input_gradient(model, objective, z), plain_grad(model, objective, z))


@pytest.mark.parametrize('dtype, min_agreement', [(torch.float16, 0.98), (torch.bfloat16, 0.9)])
def test_autocast_gradients_are_nonzero_and_agree_in_sign(setting, dtype, min_agreement):
    model, z, objectives = setting
    with ctx_batch_stats(model):
        for name, objective in objectives.items():
            reference = input_gradient(model, objective, z)
            with torch.autocast('cpu', dtype=dtype):
                grad = input_gradient(model, objective, z)
            assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
            assert (grad == 0).float().mean() < 0.005, name
            assert (grad.sign() == reference.sign()).float().mean() > min_agreement, name
            # the scale is undone: the gradient has the float32 gradient's magnitude (within 20 %)
            assert grad.norm() / reference.norm() == pytest.approx(1.0, abs=0.2), name


def test_plain_fp16_backward_loses_the_kl_gradient(setting):
    """What the scaled backward fixes: the KL batchmean gradient of the random start underflows in fp16."""
    model, z, objectives = setting
    with ctx_batch_stats(model), torch.autocast('cpu', dtype=torch.float16):
        grad = plain_grad(model, objectives['trades-kl'], z)
    # 19% to over 20% of the entries are exactly zero, depending on the CPU's fp16 kernels (Intel Xeon, AMD EPYC);
    # 5% keeps a margin on any x86 CPU and stays ten times above what the scaled backward leaves (< 0.5%, above)
    assert (grad == 0).float().mean() > 0.05


def test_fp16_sign_ascent_moves_every_pixel(setting):
    model, z, objectives = setting
    x = z.clone()
    with ctx_batch_stats(model), torch.autocast('cpu', dtype=torch.float16):
        x_adv = linf_sign_ascent(model, objectives['trades-kl'], x, z, 8 / 255, 2 / 255, 1)
    moved = (x_adv - z).abs()
    inside = (z > 2 / 255) & (z < 1 - 2 / 255)  # away from the [0, 1] clamp
    assert ((moved[inside] - 2 / 255).abs() < 1e-6).float().mean() > 0.995  # a full step (sign != 0)


def test_lse_targets_are_float32_under_low_precision_logits():
    y = torch.tensor([1, 0])
    t = lse_targets(y, 3, ls=0.1)
    assert t.dtype == torch.float32 and abs(t[0, 1].item() - 0.9) < 1e-7  # fp16 would give 0.8999, bf16 0.8984
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    for dtype in (torch.float16, torch.bfloat16):
        low = logits.to(dtype)
        loss, _ = score_lse_loss(low, low, y, beta=1.0, ls=0.1)
        q = F.softmax(low, dim=1).float()
        expected = ((q - t) ** 2).sum(dim=1).mean()  # beta * 0 robust term
        assert loss.dtype == torch.float32 and torch.equal(loss, expected)

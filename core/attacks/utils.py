"""The attacks' helpers, ascent loop and steps, op by op as the reference's (bit for bit on one device)."""
import functools

import torch

from core.losses.divergences import cw_margin


def _per_sample(factor, x):
    return x * factor.view(-1, *([1] * (x.dim() - 1)))


def norm_batch(x, p):
    return x.abs().pow(p).reshape(x.shape[0], -1).sum(dim=1).pow(1. / p)


def clamp_by_pnorm(x, p, r):
    norm = norm_batch(x, p)
    return _per_sample(torch.min(r / norm, torch.ones_like(norm)), x)


def normalize_by_pnorm(x, p=2, small_constant=1e-6):
    norm = norm_batch(x, p)
    norm = torch.max(norm, torch.ones_like(norm) * small_constant)
    return _per_sample(1. / norm, x)


# The WA eval attack's criterion: the CW margin summed and clamped (the reference's CWLoss).
CWLoss = functools.partial(cw_margin, reduction='sum', clamp=True)


def cpu_draw(shape, device, fill):
    """A float32 tensor filled on the CPU generator by `fill`, then moved to `device` (docs/differences.md item 2)."""
    device = torch.device(device)
    out = torch.empty(shape, dtype=torch.float32, pin_memory=device.type == 'cuda')
    fill(out)
    return out.to(device, non_blocking=True)


# Largest |d objective / d logit| after scaling, in the reduced-precision backward (see `input_gradient`).
ATTACK_GRAD_TARGET = 2.0 ** 4


def input_gradient(model, loss_of_logits, z):
    """d loss_of_logits(model(z)) / d z; under autocast in float32, scaled by a power of two (differences item 47)."""
    z = z.detach().requires_grad_(True)
    logits = model(z)
    if logits.dtype in (torch.float32, torch.float64):
        grad, = torch.autograd.grad(loss_of_logits(logits), [z])
        return grad
    logits32 = logits.detach().float().requires_grad_(True)
    g, = torch.autograd.grad(loss_of_logits(logits32), [logits32])
    peak = g.abs().amax()
    scale = torch.where(peak > 0, torch.exp2(torch.floor(torch.log2(ATTACK_GRAD_TARGET / peak))), 1.0)
    scale = torch.nan_to_num(scale, nan=1.0, posinf=1.0)
    grad, = torch.autograd.grad(logits, [z], grad_outputs=(g * scale).to(logits.dtype))
    return grad / scale


def ascend(model, loss_of_logits, x, start, update, iters, delta=True):
    """The attacks' one loop: `iters` steps s <- update(s, grad), grad the `input_gradient` at x + s (delta) or s."""
    s = start
    for _ in range(iters):
        grad = input_gradient(model, loss_of_logits, x + s if delta else s)
        s = update(s.detach(), grad)
    return s.detach()


def linf_box_step(x, eps, step):
    def update(x_adv, grad):
        x_adv = x_adv + step * torch.sign(grad)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        return torch.clamp(x_adv, 0.0, 1.0)
    return update


def l2_sgd_step(x, eps, lr):
    view = (-1,) + (1,) * (x.dim() - 1)

    def update(delta, grad):
        grad_norms = grad.reshape(len(x), -1).norm(p=2, dim=1)  # reshape: channels_last gradients
        grad = grad.div(grad_norms.view(view))
        grad = redraw_zero_rows(grad, grad_norms == 0)
        delta = delta.add(grad, alpha=-lr)
        delta = torch.clamp(delta + x, 0.0, 1.0) - x
        return torch.renorm(delta, p=2, dim=0, maxnorm=eps)
    return update


def linf_sign_ascent(model, loss_of_logits, x, x_adv, eps, step, iters):
    """The inner loop of TRADES, SCORE-LSE and MART: `iters` `linf_box_step`s from x_adv."""
    return ascend(model, loss_of_logits, x, x_adv, linf_box_step(x, eps, step), iters, delta=False)


def l2_sgd_ascent(model, loss_of_logits, x, delta, eps, iters):
    """The L2 inner loop of TRADES: `iters` `l2_sgd_step`s at lr = 2 eps / iters on the negated objective."""
    lr = eps / iters * 2 if iters > 0 else 0.0   # T = 0: the reference divides by zero
    return ascend(model, lambda z: -1 * loss_of_logits(z), x, delta, l2_sgd_step(x, eps, lr), iters)


def redraw_zero_rows(grad, zero):
    """The reference's N(0, 1) rows for zero gradients: on the CPU its stream, elsewhere without a host sync."""
    if grad.device.type == 'cpu':
        if zero.any():
            grad[zero] = torch.randn_like(grad[zero])
        return grad
    return torch.where(zero.view((-1,) + (1,) * (grad.dim() - 1)), torch.randn_like(grad), grad)

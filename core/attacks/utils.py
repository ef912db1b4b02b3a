"""Tensor helpers of the attacks (advertorch style) and the CW margin loss.

Every helper is a pure function of tensors. The arithmetic follows the reference operation by operation
(e.g. the L_p norm as `|x|^p` summed then `^(1/p)`, normalisation as a multiplication by `1/norm`),
so the attacks reproduce its numbers bit for bit on the same device.
"""
import functools
import math

import torch

from core.losses.divergences import cw_margin


def replicate_input(x):
    """A detached copy of `x` (the attacks never write into the caller's tensor)."""
    return x.detach().clone()


def batch_multiply(factor, x):
    """Multiply each sample of `x` (B, ...) by a scalar or by its own entry of `factor` (B,)."""
    if isinstance(factor, torch.Tensor):
        return x * factor.view(-1, *([1] * (x.dim() - 1)))
    return factor * x


def clamp(x, min=None, max=None):
    """Elementwise clamp of `x` to [min, max] (scalars; None leaves that side open)."""
    return torch.clamp(x, min=min, max=max)


def batch_clamp(eps, x):
    """Clamp `x` to [-eps, eps] elementwise (the L-inf projection of a perturbation)."""
    return torch.clamp(x, min=-eps, max=eps)


def norm_batch(x, p):
    """Per-sample L_p norm of `x` (B, ...) -> (B,), computed as (sum |x|^p)^(1/p) like the reference."""
    return x.abs().pow(p).reshape(x.shape[0], -1).sum(dim=1).pow(1. / p)


def clamp_by_pnorm(x, p, r):
    """Scale each sample of `x` by min(r / ||x||_p, 1): the projection onto the L_p ball of radius r."""
    norm = norm_batch(x, p)
    factor = torch.min(r / norm, torch.ones_like(norm))
    return batch_multiply(factor, x)


def normalize_by_pnorm(x, p=2, small_constant=1e-6):
    """Divide each sample of `x` by max(||x||_p, small_constant) (as a multiplication by the reciprocal)."""
    norm = norm_batch(x, p)
    norm = torch.max(norm, torch.ones_like(norm) * small_constant)
    return batch_multiply(1. / norm, x)


def is_linf(ord):
    """True for the L-inf order (np.inf, float('inf') or math.inf)."""
    return ord == math.inf


def rand_init_delta(x, ord, eps, clip_min=0., clip_max=1.):
    """Uniform random start of PGD, drawn on x's device with that device's generator (the reference's stream,
    docs/differences.md item 2).

    ord inf: delta ~ U(-1, 1) then delta <- eps * delta.
    ord 2:   delta ~ U(clip_min, clip_max), delta <- delta - x, then each sample scaled by min(eps/||delta||_2, 1).
    Both:    delta <- clamp(x + delta, clip_min, clip_max) - x.

    Shapes: x (B, C, H, W) -> delta (B, C, H, W).
    """
    delta = torch.zeros_like(x)
    if is_linf(ord):
        delta.uniform_(-1, 1)
        delta = batch_multiply(eps, delta)
    elif ord == 2:
        delta.uniform_(clip_min, clip_max)
        delta = delta - x
        delta = clamp_by_pnorm(delta, ord, eps)
    else:
        raise NotImplementedError('Only ord=inf and ord=2 have been implemented.')
    return clamp(x + delta, min=clip_min, max=clip_max) - x


# The WA eval attack's criterion: the CW margin summed and clamped (the reference's CWLoss).
CWLoss = functools.partial(cw_margin, reduction='sum', clamp=True)


def cpu_draw(shape, device, fill):
    """A float32 tensor of `shape` filled on the CPU generator by `fill` (e.g. `lambda t: t.normal_()`, the values of
    `torch.randn(shape)`), then moved to `device`.

    The training attacks draw their random starts on the CPU, as the reference does (the CPU stream is what a resume
    restores and what makes CPU and GPU runs start alike; docs/differences.md item 2). For a CUDA device the tensor
    is drawn into pinned memory and copied non-blocking: the host does not wait for the GPU (a pageable copy
    synchronises every step).
    """
    device = torch.device(device)
    out = torch.empty(shape, dtype=torch.float32, pin_memory=device.type == 'cuda')
    fill(out)
    return out.to(device, non_blocking=True)


# Largest |d objective / d logit| after scaling, in the reduced-precision backward (see `input_gradient`).
ATTACK_GRAD_TARGET = 2.0 ** 4


def input_gradient(model, loss_of_logits, z):
    """d loss_of_logits(model(z)) / d z for a detached float32 batch z (B, C, H, W): the gradient of an attack step.

    Only the input gradient is computed (`torch.autograd.grad` w.r.t. z; no parameter `.grad` is touched).

    Outside autocast (float32 logits) this is one plain `autograd.grad`: the reference's numbers, bit for bit.
    Under fp16 / bf16 autocast the objective's gradient is tiny (KL with 'batchmean' gives O(1e-3 / B) per
    logit at the random start), so the fp16 backward through the network underflows to exactly zero and a
    sign-ascent attack never leaves its random start. Here the objective is evaluated in float32 on the
    logits cast to float32, its gradient w.r.t. those logits is taken in float32, and multiplied by one
    power of two per batch that brings its largest entry to about `ATTACK_GRAD_TARGET`; that scaled gradient
    is back-propagated through the reduced-precision network, and the input gradient is divided by the same
    power of two (exact in float32). One scale for the whole batch (not per sample): under batch statistics
    the samples are coupled through BatchNorm, and a per-sample scale would change the direction. A positive
    scale leaves sign(grad) and grad / ||grad|| unchanged in exact arithmetic, so this only rescues the
    bits that fp16 would lose; the scale is computed on the device (no host synchronisation). bf16 has the
    range of float32 and would not underflow, but takes the same path (the float32 objective helps it too).
    docs/differences.md item 47.
    """
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
    """The one ascent loop of the attacks: `iters` steps s <- update(s, grad) from s = start, grad the
    `input_gradient` of loss_of_logits(model(z)) at z = x + s (delta: s is a perturbation) or z = s; s detached."""
    s = start
    for _ in range(iters):
        grad = input_gradient(model, loss_of_logits, x + s if delta else s)
        s = update(s.detach(), grad)
    return s.detach()


def linf_box_step(x, eps, step):
    """x_adv + step sign(grad), then min/max to the eps-box around x (in x_adv space) and [0, 1]."""
    def update(x_adv, grad):
        x_adv = x_adv + step * torch.sign(grad)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        return torch.clamp(x_adv, 0.0, 1.0)
    return update


def l2_sgd_step(x, eps, lr):
    """SGD on delta minimising the negated objective with per-sample normalised gradients (a zero one redrawn,
    `redraw_zero_rows`), then clamp01(x + delta) - x and per-sample renorm to L2 <= eps."""
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
    """The inner loop of TRADES, SCORE-LSE and MART: `iters` `linf_box_step`s from x_adv; x_adv detached."""
    return ascend(model, loss_of_logits, x, x_adv, linf_box_step(x, eps, step), iters, delta=False)


def l2_sgd_ascent(model, loss_of_logits, x, delta, eps, iters):
    """The L2 inner loop of TRADES: `iters` `l2_sgd_step`s at lr = 2 eps / iters from delta; delta detached."""
    lr = eps / iters * 2 if iters > 0 else 0.0   # T = 0: the reference divides by zero
    return ascend(model, lambda z: -1 * loss_of_logits(z), x, delta, l2_sgd_step(x, eps, lr), iters)


def redraw_zero_rows(grad, zero):
    """The reference replaces the (NaN) normalised gradient of samples whose gradient norm is 0 by N(0, 1) noise.

    On the CPU exactly so (noise drawn for those rows only, when there are any: the reference's stream). On other
    devices without asking the host whether there are any (a synchronisation per step): a full-size draw from the
    device's generator, used only in those rows. Same distribution; the device's stream then advances differently.
    """
    if grad.device.type == 'cpu':
        if zero.any():
            grad[zero] = torch.randn_like(grad[zero])
        return grad
    return torch.where(zero.view((-1,) + (1,) * (grad.dim() - 1)), torch.randn_like(grad), grad)

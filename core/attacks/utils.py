"""Tensor helpers of the attacks (advertorch style) and the CW margin loss (SPEC 5.1, 5.5).

Every helper is a pure function of tensors. The arithmetic follows the reference operation by operation
(e.g. the L_p norm as `|x|^p` summed then `^(1/p)`, normalisation as a multiplication by `1/norm`),
so the attacks reproduce its numbers bit for bit on the same device.
"""
import math

import torch
import torch.nn.functional as F


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
    """Uniform random start of PGD (SPEC 5.1 step 2), drawn on x's device with that device's generator.

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


def CWLoss(output, target, confidence=0):
    """Carlini-Wagner margin loss, summed over the batch (SPEC 5.5).

    Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.

    loss = -sum_i max(z_{i,y_i} - max_{k != y_i} z_{i,k} + confidence, 0)

    Maximising it drives the margin to 0; a misclassified sample has zero gradient.

    Arguments:
        output (Tensor): logits, shape (B, K).
        target (Tensor): labels, int64, shape (B,).
        confidence (float): margin offset. Default: 0.

    Returns:
        A scalar tensor.
    """
    target_onehot = F.one_hot(target.detach(), output.shape[-1]).to(device=output.device, dtype=output.dtype)
    real = (target_onehot * output).sum(1)
    other = ((1. - target_onehot) * output - target_onehot * 10000.).max(1)[0]
    loss = -torch.clamp(real - other + confidence, min=0.)
    return torch.sum(loss)


def linf_sign_ascent(objective, x, x_adv, eps, step, iters):
    """The inner loop of TRADES, SCORE-LSE and MART (SPEC 6.4-6.7): T sign-gradient ascent steps on
    `objective(x_adv)` (a scalar), each followed by projection to the eps-box around x and clamp01.

    Args:
        objective: x_adv -> scalar tensor to maximise (it runs the model in whatever mode the caller set).
        x: (B, C, H, W) clean images in [0, 1], detached. x_adv: the starting point, same shape.
        eps, step, iters: the L-inf radius, the step size and the number of steps.
    Returns:
        x_adv after the steps, detached. The gradient is taken w.r.t. x_adv only (no parameter .grad).
    """
    for _ in range(iters):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(objective(x_adv), [x_adv])
        x_adv = x_adv.detach() + step * torch.sign(grad)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach()


def l2_sgd_ascent(objective, x, delta, eps, iters):
    """The L2 inner loop of TRADES (SPEC 6.4, 6.7): plain SGD (no momentum, lr = 2 eps / T) on delta minimising
    `-objective(x + delta)`, with per-sample normalised gradients.

    Each step: g = grad of -objective w.r.t. delta, divided per sample by its L2 norm (a sample whose norm is 0
    gets a fresh N(0, 1) gradient, from delta's device generator); delta <- delta - lr * g; delta <-
    clamp01(x + delta) - x; delta <- per-sample renorm to L2 <= eps (torch.renorm).

    Args:
        objective: images -> scalar tensor to maximise. x: (B, C, H, W) clean images in [0, 1], detached.
        delta: the starting perturbation (B, C, H, W). eps: the L2 radius. iters: T (0: delta is returned as is).
    Returns:
        delta after the steps, detached. Gradients are taken w.r.t. delta only (no parameter .grad).
    """
    lr = eps / iters * 2 if iters > 0 else 0.0   # T = 0: the reference divides by zero
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(iters):
        delta.requires_grad_(True)
        grad, = torch.autograd.grad(-1 * objective(x + delta), [delta])
        delta = delta.detach()
        grad_norms = grad.view(len(x), -1).norm(p=2, dim=1)
        grad = grad.div(grad_norms.view(view))
        if (grad_norms == 0).any():
            grad[grad_norms == 0] = torch.randn_like(grad[grad_norms == 0])
        delta = delta.add(grad, alpha=-lr)
        delta = torch.clamp(delta + x, 0.0, 1.0) - x
        delta = torch.renorm(delta, p=2, dim=0, maxnorm=eps)
    return delta.detach()

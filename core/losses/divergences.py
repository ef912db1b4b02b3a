"""Distances, the clip bound, smoothed targets and the outer losses of the without_DDPM experiments.

Pure functions of tensors (Pang et al., "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition",
ICML 2022, Section 5.2: PGD-AT and TRADES with KL or with SCORE's squared error and loss clipping). Nothing here
touches a model, an optimizer or a random generator.

`distance(o, t, div)` is one value per sample (a sum over classes) between two batches of probability vectors
(B, K); `o` is the "output" and `t` the "target" (the order matters for the KL types):

| div                | D(o, t)                                                               |
|--------------------|-----------------------------------------------------------------------|
| `KL` / `KLsqrt`    | KL(t || o) (= -log o_y for a one-hot t, i.e. cross-entropy) / its sqrt |
| `RKLsqrt`          | sqrt(KL(o || t))                                                      |
| `JS` / `JSsqrt`    | (KL(o || M) + KL(t || M)) / 2, M = (o + t) / 2 / its sqrt per sample   |
| `LSE`              | sum_k (o_k - t_k)^2                                                   |
| `L1square`         | (sum_k |o_k - t_k|)^2                                                  |
| a number p         | ||o - t||_p (`1`, `2`, `inf`, ...)                                    |

KL(P || Q) = sum_k P_k (log P_k - log Q_k) as the original's KLDivLoss computes it, with logs of probabilities (log
of a softmax, not log_softmax; the square-root distances keep their infinite gradient at 0: docs/differences.md
item 60), and terms whose P_k is 0 masked to 0 (torch >= 2 computes NaN there, which made the original's KL clip
bound NaN: docs/differences.md item 68).
"""
import math

import torch
import torch.nn.functional as F

__all__ = ['DIVERGENCES', 'check_divergence', 'clip_bound', 'cw_margin', 'distance', 'kl', 'kl_div_batchmean',
           'kl_torch', 'smooth_cross_entropy', 'smooth_targets', 'squared_error_sum']

# The named distances (a number p selects the p-norm).
DIVERGENCES = ('JSsqrt', 'JS', 'LSE', 'L1square', 'KLsqrt', 'RKLsqrt', 'KL')


def check_divergence(div):
    """`div` if it names a distance (one of DIVERGENCES or a number, e.g. `1`, `2`, `inf`), else ValueError."""
    if div in DIVERGENCES:
        return div
    try:
        p = float(div)
    except (TypeError, ValueError):
        raise ValueError(f'unknown divergence {div!r}: use one of {", ".join(DIVERGENCES)} or a number p '
                         f'(the p-norm, e.g. 1, 2, inf)') from None
    if math.isnan(p) or p <= 0:
        raise ValueError(f'divergence {div!r}: the p of a p-norm must be > 0')
    return div


def kl(p, q):
    """KL(p || q) per row of (B, K) probabilities with the original's arithmetic, F.kl_div(log q, p) summed over
    classes (xlogy(p, p) - p log q), the p_k = 0 terms masked to 0 in value and gradient (docs/differences.md
    items 68 and 77)."""
    pos = p > 0
    p_safe = torch.where(pos, p, torch.ones_like(p))  # masked entries: xlogy(1, 1) - 1 * log 1 = 0, no gradient
    q_safe = torch.where(pos, q, torch.ones_like(q))
    return F.kl_div(torch.log(q_safe), p_safe, reduction='none').sum(1)


def kl_torch(p, q):
    """KL(p || q) per row as F.kl_div computes it, unmasked (the toy demo's)."""
    return F.kl_div(torch.log(q), p, reduction='none').sum(1)


def distance(o, t, div, kl=kl):
    """D(o, t) per sample, (B,), for probability batches o, t of shape (B, K) (see the module table); `kl` is the KL
    kernel (`kl`, masked, or `kl_torch`)."""
    if div in ('KL', 'KLsqrt'):
        d = kl(t, o)
        return d.sqrt() if div == 'KLsqrt' else d
    if div == 'RKLsqrt':
        return kl(o, t).sqrt()
    if div in ('JS', 'JSsqrt'):
        m = (o + t) / 2
        d = 0.5 * (kl(o, m) + kl(t, m))
        return d.sqrt() if div == 'JSsqrt' else d
    if div == 'LSE':
        return ((o - t) ** 2).sum(dim=1)
    if div == 'L1square':
        return (o - t).abs().sum(dim=1) ** 2
    return torch.norm(o - t, p=float(check_divergence(div)), dim=1)


def clip_bound(r, div, num_classes):
    """b = D(c, e_0), c = (1 - r, r/(K-1), ..., r/(K-1)) in float32: the per-sample loss a prediction with 1 - r on
    the true class and r spread evenly on the others incurs (e.g. LSE: r^2 K/(K-1); KL: -ln(1 - r)). A Python float.
    It depends on r, the distance and K only, as the original's (docs/differences.md item 59).
    """
    k = int(num_classes)
    c = torch.tensor([[1.0 - r] + [r / (k - 1)] * (k - 1)], dtype=torch.float32)
    e0 = F.one_hot(torch.tensor([0]), k).float()
    return distance(c, e0, div).item()


def smooth_targets(y, num_classes, ls, dtype=torch.float32):
    """1 - ls on the true class and ls/(K-1) on each other one, (B, K) in `dtype` (not TRADES's ls/K smoothing;
    docs/differences.md item 37), computed as the reference's SCORE: (1 - K ls/(K-1)) e_y + ls/(K-1)."""
    onehot = F.one_hot(y, num_classes=num_classes).to(dtype)
    return (1 - num_classes * ls / (num_classes - 1)) * onehot + ls / (num_classes - 1)


def kl_div_batchmean(p_target, logits):
    """KL(P || softmax(logits)) summed over classes, averaged over the batch (KLDivLoss 'batchmean'), 0-dim."""
    return F.kl_div(F.log_softmax(logits, dim=1), p_target, reduction='batchmean')


def squared_error_sum(p_target, logits):
    """SCORE's local squared error summed over batch and classes: sum_ik (softmax(logits)_ik - P_ik)^2, 0-dim."""
    return torch.sum((F.softmax(logits, dim=1) - p_target) ** 2)


def cw_margin(logits, y, reduction='mean', clamp=False, confidence=0.):
    """Carlini-Wagner margin (Carlini & Wagner, IEEE S&P 2017): -(z_y - max_{k != y} z_k [+ confidence]), clamped at
    0 from below before the sign when `clamp`; 'mean' or 'sum' over the batch. The WA eval attack's CWLoss is
    (sum, clamp); without_DDPM's `CW_loss` is (mean, no clamp; docs/differences.md item 66). On the logits' device
    (the reference hard-coded `.cuda()`, docs/differences.md item 2)."""
    onehot = F.one_hot(y.detach(), logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)
    real = (onehot * logits).sum(1)
    other = ((1. - onehot) * logits - onehot * 10000.).max(1)[0]
    margin = real - other + confidence
    loss = -torch.clamp(margin, min=0.) if clamp else -margin
    return loss.sum() if reduction == 'sum' else loss.mean()


def smooth_cross_entropy(logits, target, smoothing=0.0, reduction='mean'):
    """Label-smoothing cross-entropy: (1 - ls) (-log p_y) + ls mean_k(-log p_k) (targets 1 - ls + ls/K, ls/K);
    'mean', 'sum' or per sample ('none')."""
    log_prob = F.log_softmax(logits, dim=-1)
    nll = -log_prob.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
    loss = (1.0 - smoothing) * nll + smoothing * -log_prob.mean(dim=-1)
    if reduction == 'mean':
        return loss.mean()
    return loss.sum() if reduction == 'sum' else loss

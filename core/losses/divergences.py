"""Distances D(o, t) per sample of (B, K) probabilities, clip bound, smoothed targets (docs/differences.md 60, 68)."""
import math

import torch
import torch.nn.functional as F

DIVERGENCES = ('JSsqrt', 'JS', 'LSE', 'L1square', 'KLsqrt', 'RKLsqrt', 'KL')


def check_divergence(div):
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
    """KL(p || q) per row as F.kl_div(log q, p), p_k = 0 terms masked to 0 (docs/differences.md items 68 and 77)."""
    pos = p > 0
    p_safe = torch.where(pos, p, torch.ones_like(p))  # masked entries: xlogy(1, 1) - 1 * log 1 = 0, no gradient
    q_safe = torch.where(pos, q, torch.ones_like(q))
    return F.kl_div(torch.log(q_safe), p_safe, reduction='none').sum(1)


def distance(o, t, div):
    """D(o, t) per sample (B,); KL is KL(t || o), the cross-entropy for a one-hot t."""
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
    """b = D(c, e_0), c = (1 - r, r/(K-1), ..., r/(K-1)) in float32, as the original's (docs/differences.md item 59)."""
    k = int(num_classes)
    c = torch.tensor([[1.0 - r] + [r / (k - 1)] * (k - 1)], dtype=torch.float32)
    e0 = F.one_hot(torch.tensor([0]), k).float()
    return distance(c, e0, div).item()


def smooth_targets(y, num_classes, ls, dtype=torch.float32):
    """(1 - K ls/(K-1)) e_y + ls/(K-1), as the reference's SCORE (not TRADES's ls/K: docs/differences.md item 37)."""
    onehot = F.one_hot(y, num_classes=num_classes).to(dtype)
    return (1 - num_classes * ls / (num_classes - 1)) * onehot + ls / (num_classes - 1)


def kl_div_batchmean(p_target, logits):
    return F.kl_div(F.log_softmax(logits, dim=1), p_target, reduction='batchmean')


def squared_error_sum(p_target, logits):
    return torch.sum((F.softmax(logits, dim=1) - p_target) ** 2)


def cw_margin(logits, y, reduction='mean', clamp=False, confidence=0.):
    """CW margin -(z_y - max_{k != y} z_k + confidence), `clamp`: at 0 first (docs/differences.md items 2 and 66)."""
    onehot = F.one_hot(y.detach(), logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)
    real = (onehot * logits).sum(1)
    other = ((1. - onehot) * logits - onehot * 10000.).max(1)[0]
    margin = real - other + confidence
    loss = -torch.clamp(margin, min=0.) if clamp else -margin
    return loss.sum() if reduction == 'sum' else loss.mean()


def smooth_cross_entropy(logits, target, smoothing=0.0, reduction='mean'):
    log_prob = F.log_softmax(logits, dim=-1)
    nll = -log_prob.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
    loss = (1.0 - smoothing) * nll + smoothing * -log_prob.mean(dim=-1)
    if reduction == 'mean':
        return loss.mean()
    return loss.sum() if reduction == 'sum' else loss

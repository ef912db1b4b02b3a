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

KL(P || Q) = sum_k P_k (log P_k - log Q_k) with logs of probabilities (log of a softmax, as the original; not
log_softmax; the square-root distances keep their infinite gradient at 0: docs/differences.md item 60), and terms
whose P_k is 0 masked to 0 in value and gradient (torch 1.8's KLDivLoss; torch >= 2 computes NaN there, which made
the original's KL clip bound NaN: docs/differences.md item 68).
"""
import math

import torch
import torch.nn.functional as F

__all__ = ['DIVERGENCES', 'check_divergence', 'clip_bound', 'distance', 'kl', 'pgd_loss', 'smooth_targets',
           'trades_loss']

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
    """KL(p || q) per row of (B, K) probabilities: sum_k p_k (log p_k - log q_k), the p_k = 0 terms masked to 0."""
    pos = p > 0
    p_safe = torch.where(pos, p, torch.ones_like(p))
    q_safe = torch.where(pos, q, torch.ones_like(q))  # masked entries get neither a value nor a gradient
    terms = torch.where(pos, p_safe * (torch.log(p_safe) - torch.log(q_safe)), torch.zeros_like(p))
    return terms.sum(dim=1)


def distance(o, t, div):
    """D(o, t) per sample, (B,), for probability batches o, t of shape (B, K) (see the module table)."""
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


def smooth_targets(y, num_classes, ls):
    """1 - ls on the true class and ls/(K-1) on each other one, (B, K) float32.

    Computed as (1 - K ls') e_y + ls' with ls' = ls/(K-1).
    """
    ls_ = ls / (num_classes - 1)
    return F.one_hot(y, num_classes).float() * (1 - num_classes * ls_) + ls_


def pgd_loss(logits_adv, targets, div, bound=0.0):
    """PGD-AT (and standard training, on clean logits): mean_i relu(D(p_a,i, targets_i) - b).

    Args:
        logits_adv: (B, K) logits of the adversarial (or clean) images. targets: (B, K) probabilities
            (`smooth_targets`). div: a distance name. bound: b of `clip_bound` (0: no clipping).
    Returns:
        (scalar loss, {'distance': (B,) detached D values}).
    """
    d = distance(F.softmax(logits_adv, dim=1), targets, div)
    return F.relu(d - bound).mean(), {'distance': d.detach()}


def trades_loss(logits_adv, logits_clean, targets, div, beta, bound=0.0, clip_clean=True):
    """TRADES with a distance: natural D(p_c, targets) + beta * robust D(p_a, p_c), p_c not detached
    (docs/differences.md item 59).

    clip_clean (the default): mean_i relu(natural_i + beta robust_i - b), the clip acts on the total;
    False (`--not_clip_clean`): mean_i [natural_i + beta relu(robust_i - b)].

    Args:
        logits_adv, logits_clean: (B, K) logits of the adversarial and the clean images.
        targets: (B, K) probabilities. div: a distance name. beta: lambda. bound: b of `clip_bound`.
    Returns:
        (scalar loss, {'natural': (B,), 'robust': (B,)} detached).
    """
    p_a, p_c = F.softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1)
    natural = distance(p_c, targets, div)
    robust = distance(p_a, p_c, div)
    if clip_clean:
        per_sample = F.relu(natural + beta * robust - bound)
    else:
        per_sample = natural + beta * F.relu(robust - bound)
    return per_sample.mean(), {'natural': natural.detach(), 'robust': robust.detach()}

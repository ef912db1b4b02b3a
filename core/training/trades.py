"""TRADES (KL) and SCORE (LSE) training losses: pure outer losses and the composites the trainers call.

* pure outer losses `trades_kl_loss`, `score_lse_loss` and `trades_plain_outer_loss` (logits in, `(loss, metrics)`
  out);
* the composites `trades_composite` (TRADES-KL / SCORE-LSE of the weight-averaging trainer) and
  `trades_plain_composite` (TRADES of the plain trainer, `--tau 0`): a built inner maximisation of
  core/attacks/trades.py (`TradesInnerMax`, `TradesPlainInnerMax`) -> the training forwards -> the outer loss,
  with the reference's RNG consumption and running-statistics updates. The objectives (core/training/objectives.py)
  call them with the attack built once per run;
* the reference's names `trades_loss`, `trades_loss_LSE` (also importable from gowal21uncovering.utils.trades)
  and `trades_loss_plain`, which build the attack per call and run the same composites.

Papers: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019
(TRADES); Pang et al., "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition", ICML 2022
(SCORE); Gowal et al., "Uncovering the Limits of Adversarial Training", 2020 (label smoothing, CutMix).
"""
import torch
import torch.nn.functional as F

from core.attacks.trades import TradesInnerMax, TradesPlainInnerMax, kl_div_batchmean
from core.utils.checkpoint import unwrap_model
from core.utils.metrics import batch_accuracy
from core.utils.utils import smooth_cross_entropy

__all__ = ['trades_kl_loss', 'score_lse_loss', 'lse_targets', 'trades_plain_outer_loss', 'trades_composite',
           'trades_plain_composite', 'trades_loss', 'trades_loss_LSE', 'trades_loss_plain']


# ----------------------------------------------------------------------------------------------------------
# Pure outer losses: (logits_nat (B, K), logits_adv (B, K), labels) -> (loss, metrics)
# ----------------------------------------------------------------------------------------------------------

def _metrics(loss, y, logits_nat, logits_adv, soft):
    """{'loss', 'clean_acc', 'adversarial_acc'} as 0-dim tensors on the device (no host synchronisation)."""
    if soft:  # CutMix soft labels: no accuracy to report; the reference logs -1 (docs/differences.md item 26)
        minus_one = torch.full((), -1.0, device=loss.device)
        return {'loss': loss.detach(), 'clean_acc': minus_one, 'adversarial_acc': minus_one}
    return {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, logits_nat.detach()),
            'adversarial_acc': batch_accuracy(y, logits_adv.detach())}


def trades_kl_loss(logits_nat, logits_adv, y, beta, ls=0.1, soft_labels=None):
    """TRADES outer loss with label smoothing.

    loss = L_nat + beta * KL_bm(softmax(z_nat) || softmax(z_adv)), gradients through both arguments, where
    L_nat = SmoothCE_ls(z_nat, y) (target 1 - ls + ls/K on the true class, ls/K elsewhere), or
    KL_bm(soft_labels || softmax(z_nat)) with CutMix soft labels.

    Args:
        logits_nat, logits_adv: (B, K) logits of the clean and adversarial batch.
        y: (B,) int64 labels (ignored, may be None, when soft_labels is given).
        beta: weight of the robust term.
        ls: label smoothing of the natural term. Default 0.1.
        soft_labels: optional (B, K) CutMix soft labels; both accuracies are then reported as -1.
    Returns:
        (loss 0-dim tensor, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors).
    """
    if soft_labels is not None:
        loss_natural = kl_div_batchmean(soft_labels, logits_nat)
    else:
        loss_natural = smooth_cross_entropy(logits_nat, y, smoothing=ls)
    loss_robust = kl_div_batchmean(F.softmax(logits_nat, dim=1), logits_adv)
    loss = loss_natural + beta * loss_robust
    return loss, _metrics(loss, y, logits_nat, logits_adv, soft_labels is not None)


def lse_targets(y, num_classes, ls=0.0, dtype=torch.float32):
    """SCORE targets: 1 - ls on the true class, ls/(K-1) elsewhere (not TRADES's ls/K smoothing; docs/differences.md
    item 37).

    Computed as the reference does: (1 - K*ls/(K-1)) * onehot(y) + ls/(K-1), in `dtype` (the reference's
    float32 by default; float64 logits get float64 targets). y (B,) int64 -> (B, K).
    """
    onehot = F.one_hot(y, num_classes=num_classes).to(dtype)
    return (1 - num_classes * ls / (num_classes - 1)) * onehot + ls / (num_classes - 1)


def score_lse_loss(logits_nat, logits_adv, y, beta, ls=0.0, num_classes=None, clip_value=0.0, soft_labels=None):
    """SCORE outer loss: local squared errors of probabilities.

    With q = softmax: L_nat,i = sum_k (q_nat,ik - t_ik)^2, L_rob,i = relu(sum_k (q_adv,ik - q_nat,ik)^2 - clip_value),
    loss = mean_i L_nat,i + beta * mean_i L_rob,i, where t = `lse_targets(y, K, ls)` or the CutMix soft labels.

    Args:
        logits_nat, logits_adv: (B, K) logits of the clean and adversarial batch.
        y: (B,) int64 labels (ignored, may be None, when soft_labels is given).
        beta: weight of the robust term.
        ls: label smoothing of the target. Default 0.0.
        num_classes: K. Default None = logits_nat.shape[1].
        clip_value: per-sample clipping of the robust term. Default 0.0.
        soft_labels: optional (B, K) CutMix soft labels; both accuracies are then reported as -1.
    Returns:
        (loss 0-dim tensor, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors).
    """
    num_classes = logits_nat.shape[1] if num_classes is None else num_classes
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)  # float32 targets under fp16 / bf16 autocast
    target = soft_labels if soft_labels is not None else lse_targets(y, num_classes, ls, dtype)
    q_nat = F.softmax(logits_nat, dim=1)
    q_adv = F.softmax(logits_adv, dim=1)
    loss_natural = torch.sum((q_nat - target) ** 2, dim=-1)
    loss_robust = F.relu(torch.sum((q_adv - q_nat) ** 2, dim=-1) - clip_value)
    loss = loss_natural.mean() + beta * loss_robust.mean()
    return loss, _metrics(loss, y, q_nat, q_adv, soft_labels is not None)


def trades_plain_outer_loss(logits_nat, logits_adv, y, beta):
    """TRADES outer loss of the plain trainer (`--tau 0`): CE(z_nat, y) + beta * KL_sum(p(z_nat) || p(z_adv)) / B.

    Args:
        logits_nat, logits_adv: (B, K) logits of the clean and adversarial batch. y: (B,) int64 labels.
        beta: weight of the robust term.
    Returns:
        (loss 0-dim tensor, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors).
    """
    kl_sum = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction='sum')
    loss = F.cross_entropy(logits_nat, y) + beta * (kl_sum / len(logits_nat))
    return loss, _metrics(loss, y, logits_nat, logits_adv, False)


# ----------------------------------------------------------------------------------------------------------
# Composites: a built inner maximisation (attack object) -> the forwards -> the pure outer loss, in the
# reference's forward, RNG and BatchNorm-update order. The objectives (core/training/objectives.py) call them with the
# attack built once per run; the reference's names below build it per call.
# ----------------------------------------------------------------------------------------------------------

def trades_composite(model, attack, x, y, use_cutmix, outer_loss, **outer_args):
    """TRADES-KL / SCORE-LSE of the WA trainer: z_nat = model(x) in train mode, the target softmax(z_nat)
    (detached; CutMix: the soft labels y), x_adv = attack(x, target) (a `TradesInnerMax` on the plain module:
    batch statistics, no BN update), z_adv = model(x_adv) in train mode, then `outer_loss(z_nat, z_adv, y, ...)`
    (`trades_kl_loss` or `score_lse_loss`, with `soft_labels=y` under CutMix).

    The reference ran a separate target forward (batch statistics, no BN update) before the attack; a train-mode
    forward normalises with the same batch statistics, so z_nat gives the same target bit for bit and that forward
    is saved (docs/differences.md item 42). The running statistics are still updated exactly twice per step, by
    z_nat then z_adv, and the attack's random draws are unchanged. The attack runs on the plain module, not through
    DistributedDataParallel nor a torch.compile graph; with batch statistics the numbers are the same
    (docs/differences.md item 48).
    """
    model.train()
    logits_nat = model(x)
    p_natural = y if use_cutmix else F.softmax(logits_nat.detach(), dim=1)
    x_adv = attack(x, p_natural)
    logits_adv = model(x_adv)
    if use_cutmix:
        return outer_loss(logits_nat, logits_adv, None, soft_labels=y, **outer_args)
    return outer_loss(logits_nat, logits_adv, y, **outer_args)


def trades_plain_composite(model, attack, x, y, beta):
    """TRADES of the plain trainer: x_adv = attack(x, y) (a `TradesPlainInnerMax`: eval mode), then in train mode
    z_nat = model(x), z_adv = model(x_adv) (each updates the BN running statistics once) and
    `trades_plain_outer_loss`."""
    x = x.detach()
    x_adv = attack(x, y)
    model.train()
    logits_nat = model(x)
    logits_adv = model(x_adv)
    return trades_plain_outer_loss(logits_nat, logits_adv, y, beta)


def trades_loss(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                label_smoothing=0.1, use_cutmix=False):
    """TRADES-KL training loss of the WA trainer: `TradesInnerMax` (KL), then `trades_kl_loss` (`trades_composite`).

    Args:
        model: the training model (left in train mode, BN tracking flags as found); the attack runs on
            `unwrap_model(model)`.
        x: (B, C, H, W) images in [0, 1].
        y: (B,) int64 labels, or (B, K) soft labels when use_cutmix.
        step_size, epsilon, perturb_steps: alpha, eps, T of the inner maximisation.
        beta: weight of the robust term. attack: 'linf-pgd' or 'l2-pgd'.
        label_smoothing: ls of the natural cross-entropy. Default 0.1. use_cutmix: y holds soft labels.
    Returns:
        (loss, metrics). No optimizer is touched: the caller zeroes the gradients before backward.
    """
    inner = TradesInnerMax(unwrap_model(model), 'kl', attack, epsilon, step_size, perturb_steps)
    return trades_composite(model, inner, x, y, use_cutmix, trades_kl_loss, beta=beta, ls=label_smoothing)


def trades_loss_LSE(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                    label_smoothing=0.1, clip_value=0, use_cutmix=False, num_classes=10):
    """SCORE-LSE training loss of the WA trainer: `TradesInnerMax` on the squared error, then `score_lse_loss`.

    Arguments as `trades_loss`, plus num_classes (K, default 10) and clip_value (default 0).
    Returns (loss, metrics); no optimizer is touched.
    """
    inner = TradesInnerMax(unwrap_model(model), 'lse', attack, epsilon, step_size, perturb_steps)
    return trades_composite(model, inner, x, y, use_cutmix, score_lse_loss, beta=beta, ls=label_smoothing,
                            num_classes=num_classes, clip_value=clip_value)


def trades_loss_plain(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd'):
    """TRADES of the plain Trainer (`--tau 0`; Zhang et al., ICML 2019), L-inf or L2.

    `TradesPlainInnerMax` on the plain module (eval mode, summed KL to the eval-mode prediction), then, in train
    mode, `trades_plain_outer_loss`: CE(z_nat, y) + beta * KL_sum(p(z_nat) || p(z_adv)) / B.

    Args:
        model: the training model (left in train mode). x: (B, C, H, W) in [0, 1]. y: (B,) int64.
        step_size, epsilon, perturb_steps: alpha (L-inf only), eps, T. beta: weight of the robust term.
        attack: 'linf-pgd' or 'l2-pgd'.
    Returns:
        (loss, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors). No optimizer is touched.
    """
    inner = TradesPlainInnerMax(unwrap_model(model), attack, epsilon, step_size, perturb_steps)  # eager module
    return trades_plain_composite(model, inner, x, y, beta)

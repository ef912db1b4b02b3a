"""TRADES (KL) and SCORE (LSE) training losses: pure outer losses and the composites the trainers call.

* pure outer losses `trades_kl_loss` and `score_lse_loss` (logits in, `(loss, metrics)` out);
* the composites `trades_loss` / `trades_loss_LSE` of the weight-averaging trainer (the reference's names, also
  importable from gowal21uncovering.utils.trades), with the reference's RNG consumption and running-statistics
  updates: z_nat = model(x) in train mode (its softmax, detached, is the target: the reference computed it with an
  extra forward that gives the same numbers), the inner maximisation `TradesInnerMax` (core/attacks/trades.py;
  batch statistics, no running-stat update), then z_adv = model(x_adv) in train mode; z_nat and z_adv each update
  the BatchNorm running statistics once, in that order;
* `trades_loss_plain`, TRADES of the plain trainer (`--tau 0`): `TradesPlainInnerMax`, then the outer loss.

Papers: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019
(TRADES); Pang et al., "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition", ICML 2022
(SCORE); Gowal et al., "Uncovering the Limits of Adversarial Training", 2020 (label smoothing, CutMix).
"""
import torch
import torch.nn.functional as F

from core.attacks.trades import TradesPlainInnerMax, inner_maximize, kl_div_batchmean
from core.metrics import batch_accuracy
from core.utils.checkpoint import unwrap_model
from core.utils.utils import smooth_cross_entropy

__all__ = ['trades_kl_loss', 'score_lse_loss', 'lse_targets', 'trades_loss', 'trades_loss_LSE', 'trades_loss_plain']


# ----------------------------------------------------------------------------------------------------------
# Pure outer losses: (logits_nat (B, K), logits_adv (B, K), labels) -> (loss, metrics)
# ----------------------------------------------------------------------------------------------------------

def _metrics(loss, y, logits_nat, logits_adv, soft):
    """{'loss', 'clean_acc', 'adversarial_acc'} as 0-dim tensors on the device (no host synchronisation)."""
    if soft:  # CutMix soft labels: no accuracy to report; the reference logs -1
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
    """SCORE targets: 1 - ls on the true class, ls/(K-1) elsewhere (not TRADES's ls/K smoothing).

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


# ----------------------------------------------------------------------------------------------------------
# Composites used by the trainer (reference names, RNG order and forward order)
# ----------------------------------------------------------------------------------------------------------

def _adversarial_pair(model, x, y, divergence, attack, epsilon, step_size, perturb_steps, use_cutmix):
    """z_nat = model(x) in train mode, the target softmax(z_nat) (detached), the inner max on the plain module
    (batch statistics, no BN update), then z_adv = model(x_adv) in train mode.

    The reference ran a separate target forward (batch statistics, no BN update) before the attack; a train-mode
    forward normalises with the same batch statistics, so z_nat gives the same target bit for bit (the running
    statistics it updates are not read by the attack) and that forward is saved. The running statistics are still
    updated exactly twice per step, by z_nat then z_adv, and the attack's random draws are unchanged. The attack
    runs on `unwrap_model(model)`: not through DistributedDataParallel (no buffer broadcast per attack forward) nor a
    torch.compile graph (eager `autograd.grad` w.r.t. the input only); with batch statistics the numbers are the same.
    """
    model.train()
    logits_nat = model(x)
    p_natural = y if use_cutmix else F.softmax(logits_nat.detach(), dim=1)
    x_adv = inner_maximize(unwrap_model(model), x, p_natural, divergence, attack, epsilon, step_size, perturb_steps)
    logits_adv = model(x_adv)
    return logits_nat, logits_adv


def trades_loss(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                label_smoothing=0.1, use_cutmix=False):
    """TRADES-KL training loss of the WA trainer: inner max, then `trades_kl_loss`.

    Args:
        model: the training model (left in train mode, BN tracking flags as found).
        x: (B, C, H, W) images in [0, 1].
        y: (B,) int64 labels, or (B, K) soft labels when use_cutmix.
        step_size, epsilon, perturb_steps: alpha, eps, T of the inner maximisation.
        beta: weight of the robust term. attack: 'linf-pgd' or 'l2-pgd'.
        label_smoothing: ls of the natural cross-entropy. Default 0.1. use_cutmix: y holds soft labels.
    Returns:
        (loss, metrics). No optimizer is touched: the caller zeroes the gradients before backward.
    """
    logits_nat, logits_adv = _adversarial_pair(model, x, y, 'kl', attack, epsilon, step_size, perturb_steps,
                                               use_cutmix)
    if use_cutmix:
        return trades_kl_loss(logits_nat, logits_adv, None, beta, label_smoothing, soft_labels=y)
    return trades_kl_loss(logits_nat, logits_adv, y, beta, label_smoothing)


def trades_loss_LSE(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                    label_smoothing=0.1, clip_value=0, use_cutmix=False, num_classes=10):
    """SCORE-LSE training loss of the WA trainer: inner max on the squared error, then `score_lse_loss`.

    Arguments as `trades_loss`, plus num_classes (K, default 10) and clip_value (default 0).
    Returns (loss, metrics); no optimizer is touched.
    """
    logits_nat, logits_adv = _adversarial_pair(model, x, y, 'lse', attack, epsilon, step_size, perturb_steps,
                                               use_cutmix)
    if use_cutmix:
        return score_lse_loss(logits_nat, logits_adv, None, beta, label_smoothing, num_classes, clip_value,
                              soft_labels=y)
    return score_lse_loss(logits_nat, logits_adv, y, beta, label_smoothing, num_classes, clip_value)


def trades_loss_plain(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd'):
    """TRADES of the plain Trainer (`--tau 0`; Zhang et al., ICML 2019), L-inf or L2.

    `TradesPlainInnerMax` on the plain module (eval mode, summed KL to the eval-mode prediction), then, in train
    mode, loss = CE(z_nat, y) + beta * KL_sum(p(z_nat) || p(z_adv)) / B.

    Args:
        model: the training model (left in train mode). x: (B, C, H, W) in [0, 1]. y: (B,) int64.
        step_size, epsilon, perturb_steps: alpha (L-inf only), eps, T. beta: weight of the robust term.
        attack: 'linf-pgd' or 'l2-pgd'.
    Returns:
        (loss, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors). No optimizer is touched.
    """
    x = x.detach()
    x_adv = TradesPlainInnerMax(unwrap_model(model), attack, epsilon, step_size, perturb_steps)(x, y)  # eager module
    model.train()
    logits_nat = model(x)
    logits_adv = model(x_adv)
    loss_robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction='sum') / len(x)
    loss = F.cross_entropy(logits_nat, y) + beta * loss_robust
    return loss, {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, logits_nat.detach()),
                  'adversarial_acc': batch_accuracy(y, logits_adv.detach())}

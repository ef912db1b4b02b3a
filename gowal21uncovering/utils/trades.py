"""TRADES (KL) and SCORE (LSE) adversarial training losses (SPEC 6.4, 6.5, 6.9).

Three layers, from pure to stateful:

* divergences between a target distribution and a model's logits: `kl_div_batchmean` (TRADES) and
  `squared_error_sum` (SCORE's local squared error);
* `TradesInnerMax`, the inner maximisation as an attack object. ONE loop serves both divergences; the
  divergence is a parameter. Gradients are taken with `torch.autograd.grad` w.r.t. the input only, so no
  parameter `.grad` is ever created or changed (the reference back-propagates into the parameters and
  zeroes their gradients afterwards: numerically the same);
* pure outer losses `trades_kl_loss` and `score_lse_loss` (logits in, `(loss, metrics)` out), and the
  composites `trades_loss` / `trades_loss_LSE` that the trainer calls, with the reference's names, RNG
  consumption and running-statistics updates: z_nat = model(x) in train mode (its softmax, detached, is the
  target: the reference computed it with an extra forward that gives the same numbers), T attack forwards
  with batch statistics and no running-stat update, then z_adv = model(x_adv) in train mode; z_nat and z_adv
  each update the BatchNorm running statistics once, in that order.

Papers: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019
(TRADES); Pang et al., "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition", ICML 2022
(SCORE); Gowal et al., "Uncovering the Limits of Adversarial Training", 2020 (label smoothing, CutMix).
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks.utils import cpu_draw, l2_sgd_ascent, linf_sign_ascent
from core.errors import UserError
from core.metrics import batch_accuracy
from core.utils.distributed import unwrap
from core.utils.utils import smooth_cross_entropy

__all__ = [
    'DIVERGENCES', 'INNER_ATTACKS', 'kl_div_batchmean', 'squared_error_sum', 'ctx_batch_stats',
    'TradesInnerMax', 'inner_maximize', 'trades_kl_loss', 'score_lse_loss', 'lse_targets',
    'trades_loss', 'trades_loss_LSE',
]


# ----------------------------------------------------------------------------------------------------------
# Divergences: (p_target (B, K) probabilities, logits (B, K)) -> scalar
# ----------------------------------------------------------------------------------------------------------

def kl_div_batchmean(p_target, logits):
    """KL(P || softmax(logits)) summed over classes, averaged over the batch (KLDivLoss 'batchmean').

    = (1/B) sum_i sum_k P_ik (log P_ik - log_softmax(logits)_ik), with 0 log 0 = 0. Gradients flow through
    both arguments (the TRADES robust term needs both).

    Args:
        p_target: (B, K) target probabilities (rows sum to 1).
        logits: (B, K) logits of the distribution compared with the target.
    Returns:
        a 0-dim tensor.
    """
    return F.kl_div(F.log_softmax(logits, dim=1), p_target, reduction='batchmean')


def squared_error_sum(p_target, logits):
    """SCORE's local squared error: sum_i sum_k (softmax(logits)_ik - P_ik)^2 (a sum over batch and classes).

    Args:
        p_target: (B, K) target probabilities.
        logits: (B, K) logits.
    Returns:
        a 0-dim tensor.
    """
    return torch.sum((F.softmax(logits, dim=1) - p_target) ** 2)


DIVERGENCES = {'kl': kl_div_batchmean, 'lse': squared_error_sum}
INNER_ATTACKS = ('linf-pgd', 'l2-pgd')


# ----------------------------------------------------------------------------------------------------------
# Inner maximisation
# ----------------------------------------------------------------------------------------------------------

@contextmanager
def ctx_batch_stats(model: nn.Module):
    """Train mode with `track_running_stats = False` on every BatchNorm, restored exactly on exit.

    Inside, BatchNorm normalises with the batch statistics and updates neither the running statistics
    nor `num_batches_tracked` (the state TRADES/LSE run their target and attack forwards in).
    """
    modes = [(m, m.training) for m in model.modules()]
    bns = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train()
    for m, _ in bns:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, flag in bns:
            m.track_running_stats = flag
        for m, mode in modes:
            m.training = mode


class TradesInnerMax:
    """TRADES / SCORE inner maximisation: x_adv = argmax_{x' in B(x, eps)} D(P, model(x')) (SPEC 6.4, 6.5).

    Papers: Zhang et al. 2019 (TRADES, D = KL); Pang et al. 2022 (SCORE, D = squared error).
    Threat model: L-inf (sign ascent, `linf-pgd`) or L2 (normalised SGD on delta, `l2-pgd`), images in [0, 1].

    Args:
        model: the network; run in train mode with BatchNorm running-stat tracking off (batch statistics,
            no update); its modes and tracking flags are restored as found, also on an exception.
        divergence: 'kl' (`kl_div_batchmean`) or 'lse' (`squared_error_sum`). Default 'kl'.
        attack: 'linf-pgd' or 'l2-pgd'. Default 'linf-pgd'. Anything else raises UserError (a ValueError).
        eps: radius of the ball. Default 8/255.
        step: L-inf step size (unused by the L2 branch, whose SGD rate is 2*eps/iters). Default 2/255.
        iters: number of steps T. Default 10.

    Call: `attack(x, target_probs) -> x_adv`, x (B, C, H, W) in [0, 1], target_probs (B, K) detached
    probabilities; x_adv (B, C, H, W) detached, in [0, 1], within eps of x.

    Random initialisation, drawn from the CPU generator (float32) and then moved to x's device (`cpu_draw`), as
    the reference does (it matters for the RNG stream): L-inf x + U(-eps, eps) clamped to [0, 1]; L2
    delta = 0.001 * N(0, 1). The L-inf init is drawn for both branches (the reference draws it first).
    """

    def __init__(self, model, divergence='kl', attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
        if divergence not in DIVERGENCES:
            raise UserError(f'unknown divergence {divergence!r}; use one of {sorted(DIVERGENCES)}.')
        if attack not in INNER_ATTACKS:
            raise UserError(f'attack {attack!r} is not supported by TRADES/LSE training; '
                            f'use --attack {" or ".join(INNER_ATTACKS)}.')
        self.model = model
        self.divergence = DIVERGENCES[divergence]
        self.attack = attack
        self.eps = eps
        self.step = step
        self.iters = iters

    def __call__(self, x, target_probs):
        with ctx_batch_stats(self.model), torch.enable_grad():
            return self._perturb(x.detach(), target_probs.detach())

    def _perturb(self, x, p):
        eps = self.eps
        noise = cpu_draw(x.shape, x.device, lambda t: t.uniform_(-eps, eps))
        x_adv = torch.clamp(x + noise, 0.0, 1.0)
        if self.attack == 'linf-pgd':
            x_adv = linf_sign_ascent(self.model, lambda z: self.divergence(p, z), x, x_adv, eps, self.step,
                                     self.iters)
        else:  # 'l2-pgd': plain SGD (no momentum) on delta, rate 2*eps/T, on the negated divergence
            delta = 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            x_adv = x + l2_sgd_ascent(self.model, lambda z: self.divergence(p, z), x, delta, eps, self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()


def inner_maximize(model, x, target_probs, divergence='kl', attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
    """Functional form of `TradesInnerMax(model, divergence, attack, eps, step, iters)(x, target_probs)`."""
    return TradesInnerMax(model, divergence, attack, eps, step, iters)(x, target_probs)


# ----------------------------------------------------------------------------------------------------------
# Pure outer losses: (logits_nat (B, K), logits_adv (B, K), labels) -> (loss, metrics)
# ----------------------------------------------------------------------------------------------------------

def _metrics(loss, y, logits_nat, logits_adv, soft):
    """{'loss', 'clean_acc', 'adversarial_acc'} as 0-dim tensors on the device (no host synchronisation)."""
    if soft:  # CutMix soft labels: the reference reports -1 (SPEC 6.8, quirk 26)
        minus_one = torch.full((), -1.0, device=loss.device)
        return {'loss': loss.detach(), 'clean_acc': minus_one, 'adversarial_acc': minus_one}
    return {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, logits_nat.detach()),
            'adversarial_acc': batch_accuracy(y, logits_adv.detach())}


def trades_kl_loss(logits_nat, logits_adv, y, beta, ls=0.1, soft_labels=None):
    """TRADES outer loss with label smoothing (SPEC 6.4 steps 4-7).

    loss = L_nat + beta * KL_bm(softmax(z_nat) || softmax(z_adv)), gradients through both arguments, where
    L_nat = SmoothCE_ls(z_nat, y) (SPEC 6.1: target 1 - ls + ls/K on the true class, ls/K elsewhere), or
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
    """SCORE targets: 1 - ls on the true class, ls/(K-1) elsewhere (SPEC 6.5 step 2; differs from 6.1).

    Computed as the reference does: (1 - K*ls/(K-1)) * onehot(y) + ls/(K-1), in `dtype` (the reference's
    float32 by default; float64 logits get float64 targets). y (B,) int64 -> (B, K).
    """
    onehot = F.one_hot(y, num_classes=num_classes).to(dtype)
    return (1 - num_classes * ls / (num_classes - 1)) * onehot + ls / (num_classes - 1)


def score_lse_loss(logits_nat, logits_adv, y, beta, ls=0.0, num_classes=None, clip_value=0.0, soft_labels=None):
    """SCORE outer loss: local squared errors of probabilities (SPEC 6.5 steps 2-6).

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
    runs on `unwrap(model)`: not through DistributedDataParallel (no buffer broadcast per attack forward) nor a
    torch.compile graph (eager `autograd.grad` w.r.t. the input only); with batch statistics the numbers are the same.
    """
    model.train()
    logits_nat = model(x)
    p_natural = y if use_cutmix else F.softmax(logits_nat.detach(), dim=1)
    x_adv = inner_maximize(unwrap(model), x, p_natural, divergence, attack, epsilon, step_size, perturb_steps)
    logits_adv = model(x_adv)
    return logits_nat, logits_adv


def trades_loss(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                label_smoothing=0.1, use_cutmix=False):
    """TRADES-KL training loss of the WA trainer (SPEC 6.4): inner max, then `trades_kl_loss`.

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
    """SCORE-LSE training loss of the WA trainer (SPEC 6.5): inner max on the squared error, then `score_lse_loss`.

    Arguments as `trades_loss`, plus num_classes (K, default 10) and clip_value (default 0).
    Returns (loss, metrics); no optimizer is touched.
    """
    logits_nat, logits_adv = _adversarial_pair(model, x, y, 'lse', attack, epsilon, step_size, perturb_steps,
                                               use_cutmix)
    if use_cutmix:
        return score_lse_loss(logits_nat, logits_adv, None, beta, label_smoothing, num_classes, clip_value,
                              soft_labels=y)
    return score_lse_loss(logits_nat, logits_adv, y, beta, label_smoothing, num_classes, clip_value)

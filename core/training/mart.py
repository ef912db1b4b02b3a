"""MART: misclassification-aware adversarial training.

Paper: Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020.

`MartInnerMax` (core/attacks/trades.py, also importable here) is the attack (L-inf sign ascent on the mean
cross-entropy, in eval mode), `mart_outer_loss` the pure loss on logits, and `mart_composite` the composite the
objective (objectives.py) calls with the attack built once per run: T attack forwards in eval mode (running
statistics used, not updated), then z = model(x) and z_adv = model(x_adv) in train mode, each updating the
BatchNorm running statistics once. `mart_loss` (the reference's name) builds the attack per call.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks.trades import MartInnerMax
from core.utils.checkpoint import unwrap_model
from core.utils.metrics import batch_accuracy

__all__ = ['MartInnerMax', 'mart_outer_loss', 'mart_composite', 'mart_loss']


def mart_outer_loss(logits_nat, logits_adv, y, beta):
    """MART outer loss.

    With P = softmax(z), P_adv = softmax(z_adv) and y_hat_i the most probable class of P_adv other than y_i:
      L_adv = CE(z_adv, y) + mean_i[-log(1.0001 - P_adv[i, y_hat_i] + 1e-12)],
      L_rob = (1/B) sum_i (sum_k P_ik (log P_ik - log(P_adv_ik + 1e-12))) * (1.0000001 - P[i, y_i]),
      loss = L_adv + beta * L_rob (gradients through both distributions).

    Args:
        logits_nat, logits_adv: (B, K) logits; y: (B,) int64 labels; beta: weight of the robust term.
    Returns:
        (loss 0-dim tensor, {'loss', 'clean_acc', 'adversarial_acc'} 0-dim tensors).
    """
    batch_size = len(logits_nat)
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits_nat, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze(1)
    kl = nn.KLDivLoss(reduction='none')(torch.log(adv_probs + 1e-12), nat_probs)
    loss_robust = (1.0 / batch_size) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs))
    loss = loss_adv + float(beta) * loss_robust
    metrics = {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, logits_nat.detach()),
               'adversarial_acc': batch_accuracy(y, logits_adv.detach())}
    return loss, metrics


def mart_composite(model, attack, x, y, beta):
    """MART of a built inner maximisation: x_adv = attack(x, y) (a `MartInnerMax`: eval mode, running statistics
    used, not updated), then in train mode z = model(x), z_adv = model(x_adv) (each updates the BN running
    statistics once) and `mart_outer_loss`."""
    x_adv = attack(x, y)
    model.train()
    logits = model(x)
    logits_adv = model(x_adv)
    return mart_outer_loss(logits, logits_adv, y, beta)


def mart_loss(model, x, y, *, step_size=0.007, epsilon=0.031, perturb_steps=10, beta=6.0, attack='linf-pgd'):
    """MART training loss: `MartInnerMax` built for this call, then `mart_composite`.

    Args:
        model: the training model (left in train mode); the attack runs on `unwrap_model(model)` (eager, and under DDP
            with this process's running statistics, docs/differences.md item 48). x: (B, C, H, W) in [0, 1].
            y: (B,) int64.
        step_size, epsilon, perturb_steps: alpha, eps, T. beta: weight of the robust term. Default 6.0.
        attack: only 'linf-pgd'.
    Returns:
        (loss, metrics). No optimizer is touched: the caller zeroes the gradients before backward.
    """
    inner = MartInnerMax(unwrap_model(model), attack, epsilon, step_size, perturb_steps)  # no DDP / compile
    return mart_composite(model, inner, x, y, beta)

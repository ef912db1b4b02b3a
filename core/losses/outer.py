"""Outer losses of adversarial training (PGD-AT, TRADES, MART, SCORE): logits and targets -> (loss, metrics)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.utils.metrics import batch_accuracy

from .divergences import distance, kl_div_batchmean, smooth_cross_entropy, smooth_targets


def kl_term(logits, target, probs=None):
    return kl_div_batchmean(target, logits)


def lse_term(logits, target, probs=None):
    probs = F.softmax(logits, dim=1) if probs is None else probs
    return torch.sum((probs - target) ** 2, dim=-1)


def distance_term(div):
    def term(logits, target, probs=None):
        return distance(F.softmax(logits, dim=1) if probs is None else probs, target, div)
    return term


def _mean(t):
    return t.mean() if t.dim() else t


def trades_loss(logits_nat, logits_adv, targets, *, beta, divergence, natural=None, bound=None, clip_clean=False,
                per_sample=False):
    """(natural + beta robust, natural, robust), robust = divergence(z_adv, p_nat) (docs/differences.md item 59)."""
    p_nat = F.softmax(logits_nat, dim=1)
    natural = divergence(logits_nat, targets, p_nat) if natural is None else natural
    robust = divergence(logits_adv, p_nat)
    if bound is not None and clip_clean:
        return F.relu(natural + beta * robust - bound).mean(), natural, robust
    clipped = robust if bound is None else F.relu(robust - bound)
    if per_sample:
        return (natural + beta * clipped).mean(), natural, robust
    return _mean(natural) + beta * _mean(clipped), natural, robust


def pgd_loss(logits_adv, targets, div, bound=0.0):
    """without_DDPM PGD-AT (standard training: clean logits): mean_i relu(D(p_adv,i, targets_i) - b)."""
    d = distance(F.softmax(logits_adv, dim=1), targets, div)
    return F.relu(d - bound).mean(), {'distance': d.detach()}


def _metrics(loss, y, logits_nat, logits_adv, soft=False):
    if soft:  # CutMix soft labels: no accuracy to report; the reference logs -1 (docs/differences.md item 26)
        minus_one = torch.full((), -1.0, device=loss.device)
        return {'loss': loss.detach(), 'clean_acc': minus_one, 'adversarial_acc': minus_one}
    return {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, logits_nat.detach()),
            'adversarial_acc': batch_accuracy(y, logits_adv.detach())}


def trades_kl_loss(logits_nat, logits_adv, y, *, beta, ls=0.1, soft_labels=None):
    """TRADES-KL: SmoothCE_ls(z_nat, y) (CutMix: KL_bm(soft_labels || p_nat)) + beta KL_bm(p_nat || p_adv)."""
    soft = soft_labels is not None
    natural = None if soft else smooth_cross_entropy(logits_nat, y, smoothing=ls)
    loss, _, _ = trades_loss(logits_nat, logits_adv, soft_labels, beta=beta, divergence=kl_term, natural=natural)
    return loss, _metrics(loss, y, logits_nat, logits_adv, soft)


def score_lse_loss(logits_nat, logits_adv, y, *, beta, ls=0.0, num_classes=None, clip_value=0.0, soft_labels=None):
    """SCORE-LSE: mean_i |q_nat - t|^2 + beta mean_i relu(|q_adv - q_nat|^2 - clip_value), t: float32 targets."""
    num_classes = logits_nat.shape[1] if num_classes is None else num_classes
    dtype = torch.promote_types(logits_nat.dtype, torch.float32)
    target = soft_labels if soft_labels is not None else smooth_targets(y, num_classes, ls, dtype)
    loss, _, _ = trades_loss(logits_nat, logits_adv, target, beta=beta, divergence=lse_term, bound=clip_value)
    probs = F.softmax(logits_nat.detach(), dim=1), F.softmax(logits_adv.detach(), dim=1)
    return loss, _metrics(loss, y, *probs, soft_labels is not None)


def trades_plain_outer_loss(logits_nat, logits_adv, y, *, beta):
    """TRADES of the plain trainer (--tau 0): CE(z_nat, y) + beta * KL_sum(p(z_nat) || p(z_adv)) / B."""
    kl_sum = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction='sum')
    loss = F.cross_entropy(logits_nat, y) + beta * (kl_sum / len(logits_nat))
    return loss, _metrics(loss, y, logits_nat, logits_adv)


def mart_outer_loss(logits_nat, logits_adv, y, *, beta):
    """MART: CE(z_adv, y) + mean_i -log(1.0001 - P_adv[i, y_hat_i] + 1e-12)
    + beta (1/B) sum_i KL_i(P || P_adv + 1e-12) (1.0000001 - P[i, y_i]), y_hat the top class of P_adv other than y."""
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits_nat, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze(1)
    kl = nn.KLDivLoss(reduction='none')(torch.log(adv_probs + 1e-12), nat_probs)
    loss_robust = (1.0 / len(logits_nat)) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs))
    loss = loss_adv + float(beta) * loss_robust
    return loss, _metrics(loss, y, logits_nat, logits_adv)


def madry_outer_loss(logits, y, keep_clean=False):
    loss = F.cross_entropy(logits, torch.cat((y, y), dim=0) if keep_clean else y)
    preds = logits.detach()
    metrics = {'loss': loss.detach()}
    if keep_clean:
        metrics['clean_acc'] = batch_accuracy(y, preds[:len(y)])
    metrics['adversarial_acc'] = batch_accuracy(y, preds[len(y):] if keep_clean else preds)
    return loss, metrics

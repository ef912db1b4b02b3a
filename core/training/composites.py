"""Inner maximisation -> training forwards -> outer loss, in the reference's forward, RNG and BatchNorm-update order."""
import torch
import torch.nn.functional as F

from core.attacks.trades import MartInnerMax, TradesInnerMax, TradesPlainInnerMax
from core.losses.divergences import smooth_targets
from core.losses.outer import (
    distance_term,
    madry_outer_loss,
    mart_outer_loss,
    pgd_loss,
    score_lse_loss,
    trades_kl_loss,
    trades_plain_outer_loss,
)
from core.losses.outer import trades_loss as trades_outer_loss
from core.utils.checkpoint import unwrap_model


def madry_composite(model, attack, x, y, *, keep_clean):
    x_adv = attack(x, y)
    if keep_clean:
        x_adv = torch.cat((x, x_adv), dim=0)
    return madry_outer_loss(model(x_adv), y, keep_clean)


def trades_composite(model, attack, x, y, *, use_cutmix, outer_loss, **outer):
    """TRADES-KL / SCORE-LSE of the WA trainer: z_nat, then x_adv, then z_adv (docs/differences.md items 42 and 48)."""
    model.train()
    logits_nat = model(x)
    p_natural = y if use_cutmix else F.softmax(logits_nat.detach(), dim=1)
    logits_adv = model(attack(x, p_natural))
    if use_cutmix:
        return outer_loss(logits_nat, logits_adv, None, soft_labels=y, **outer)
    return outer_loss(logits_nat, logits_adv, y, **outer)


def attack_first_composite(model, attack, x, y, *, outer_loss, **outer):
    """The plain trainer's TRADES and MART: x_adv = attack(x, y), then model(x), model(x_adv) in train mode."""
    x = x.detach()
    x_adv = attack(x, y)
    model.train()
    logits_nat = model(x)
    return outer_loss(logits_nat, model(x_adv), y, **outer)


def divergence_composite(model, attack, x, y, *, num_classes, ls, divergence, bound, trades_lambda=None,
                         clip_clean=True):
    """without_DDPM's PGD / Standard (pgd_loss), TRADES (model(x_adv) before model(x), docs/differences.md item 58)."""
    x_adv = attack(x, y) if attack is not None else torch.clamp(x, 0, 1)
    targets = smooth_targets(y, num_classes, ls)
    if trades_lambda is None:
        loss = pgd_loss(model(x_adv), targets, divergence, bound)[0]
    else:
        logits_adv = model(x_adv)
        loss = trades_outer_loss(model(x), logits_adv, targets, beta=trades_lambda,
                                 divergence=distance_term(divergence), bound=bound, clip_clean=clip_clean,
                                 per_sample=True)[0]
    return loss, {'loss': loss.detach()}


def trades_loss(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                label_smoothing=0.1, use_cutmix=False):
    inner = TradesInnerMax(unwrap_model(model), 'kl', attack, epsilon, step_size, perturb_steps)
    return trades_composite(model, inner, x, y, use_cutmix=use_cutmix, outer_loss=trades_kl_loss, beta=beta,
                            ls=label_smoothing)


def trades_loss_LSE(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd',
                    label_smoothing=0.1, clip_value=0, use_cutmix=False, num_classes=10):
    inner = TradesInnerMax(unwrap_model(model), 'lse', attack, epsilon, step_size, perturb_steps)
    return trades_composite(model, inner, x, y, use_cutmix=use_cutmix, outer_loss=score_lse_loss, beta=beta,
                            ls=label_smoothing, num_classes=num_classes, clip_value=clip_value)


def trades_loss_plain(model, x, y, *, step_size=0.003, epsilon=0.031, perturb_steps=10, beta=1.0, attack='linf-pgd'):
    inner = TradesPlainInnerMax(unwrap_model(model), attack, epsilon, step_size, perturb_steps)
    return attack_first_composite(model, inner, x, y, outer_loss=trades_plain_outer_loss, beta=beta)


def mart_loss(model, x, y, *, step_size=0.007, epsilon=0.031, perturb_steps=10, beta=6.0, attack='linf-pgd'):
    inner = MartInnerMax(unwrap_model(model), attack, epsilon, step_size, perturb_steps)
    return attack_first_composite(model, inner, x, y, outer_loss=mart_outer_loss, beta=beta)

"""The reference's per-call inner maximisation, for the tests."""
from core.attacks.trades import TradesInnerMax
from core.training.composites import mart_loss, trades_loss, trades_loss_LSE, trades_loss_plain  # noqa: F401


def inner_maximize(model, x, target_probs, divergence='kl', attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
    return TradesInnerMax(model, divergence, attack, eps, step, iters)(x, target_probs)

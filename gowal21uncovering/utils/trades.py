"""TRADES (KL) and SCORE (LSE) adversarial training losses, under the reference's module path.

The code lives in core: the inner maximisations (`TradesInnerMax`, `inner_maximize`, `ctx_batch_stats`, the
divergences) in core/attacks/trades.py, the outer losses and the composites `trades_loss` / `trades_loss_LSE`
in core/training/trades.py. This module keeps the reference's import path `gowal21uncovering.utils.trades`.
"""
from core.attacks.trades import (  # noqa: F401
    DIVERGENCES,
    INNER_ATTACKS,
    TradesInnerMax,
    ctx_batch_stats,
    inner_maximize,
    kl_div_batchmean,
    squared_error_sum,
)
from core.training.trades import lse_targets, score_lse_loss, trades_kl_loss, trades_loss, trades_loss_LSE  # noqa: F401

__all__ = [
    'DIVERGENCES', 'INNER_ATTACKS', 'kl_div_batchmean', 'squared_error_sum', 'ctx_batch_stats',
    'TradesInnerMax', 'inner_maximize', 'trades_kl_loss', 'score_lse_loss', 'lse_targets',
    'trades_loss', 'trades_loss_LSE',
]

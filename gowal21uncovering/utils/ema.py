"""The reference's import path of weight averaging; the code is in core/weight_averaging.py (and update_steps in
core/schedules.py)."""
from core.schedules import update_steps
from core.weight_averaging import EMA, bn_momentum_trick, ema_decay, ema_update, update_bn, warmup_steps

__all__ = ['ema_decay', 'ema_update', 'update_bn', 'update_steps', 'warmup_steps', 'bn_momentum_trick', 'EMA']

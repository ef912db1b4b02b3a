"""The reference's import path of weight averaging (code in core/training/weight_averaging.py, schedules.py)."""
from core.training.schedules import update_steps
from core.training.weight_averaging import EMA, bn_momentum_trick, ema_decay, ema_update, update_bn, warmup_steps

__all__ = ['ema_decay', 'ema_update', 'update_bn', 'update_steps', 'warmup_steps', 'bn_momentum_trick', 'EMA']

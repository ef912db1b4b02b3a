"""The reference's import path of the plain trainer: `Trainer` (`--tau 0`) and the names that lived here.

The trainer is `core.trainer.AdversarialTrainer`, built by `core.builder.build_trainer`; the schedules are in
core/schedules.py, the epoch metrics in core/epoch_metrics.py.
"""
from core.builder import build_trainer, pretrained_path, trainer_parts
from core.epoch_metrics import FP16_SKIP_TOLERANCE, NONFINITE_CHECK_EVERY, EpochMetrics, NonFiniteLoss
from core.schedules import SCHEDULERS, update_steps
from core.trainer import AdversarialTrainer
from core.utils.trades import trades_loss_plain  # noqa: F401 (its former home)

__all__ = ['SCHEDULERS', 'EpochMetrics', 'NonFiniteLoss', 'Trainer', 'build_trainer', 'pretrained_path',
           'trades_loss_plain', 'update_steps', 'FP16_SKIP_TOLERANCE', 'NONFINITE_CHECK_EVERY']


class Trainer(AdversarialTrainer):
    """`build_trainer(info, args, runtime, weight_averaging=False)` under the reference's name (Madry, plain
    TRADES or MART without weight averaging; the objective is `core.objectives.resolve(args, False)`, a UserError
    for flags it cannot train).

    Args:
        info: dataset info of `core.data.get_data_info`. args: the parsed flags.
        runtime: device / AMP / DDP decisions. Default: CPU, float32.
    """

    WEIGHT_AVERAGING = False

    def __init__(self, info, args, runtime=None):
        super().__init__(**trainer_parts(info, args, runtime, weight_averaging=self.WEIGHT_AVERAGING))

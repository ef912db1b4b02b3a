"""train-wa.py --tensorboard: per-step and per-epoch scalars in LOG_DIR/tensorboard/ (torch.utils.tensorboard).

    board = TensorBoard(LOG_DIR, steps_per_epoch=len(train_loader), start_epoch=1)   # the primary process only
    trainer.train(train_loader, epoch=e, on_step=board.step)     # train/loss, train/*_acc, train/lr per step
    board.epoch(e, epoch_metrics)                                 # epoch/<stats_adv.csv column> per epoch
    board.close()

The x axis is the optimizer step of the run, (epoch - 1) * steps_per_epoch + batch (1-based), for both kinds of
tags; an epoch's values sit at the step of its last batch. A resumed run continues the same curves: its writer
purges whatever an earlier process wrote from its first step on (SummaryWriter's `purge_step`: the tail of a killed
run, or an old run under --overwrite), so every step appears once. The `tensorboard` package is optional:
`require_tensorboard()` turns its absence into a one-line error before the run writes anything.
"""
import os

from core.utils.errors import UserError

__all__ = ['TensorBoard', 'require_tensorboard', 'SUBDIR']

SUBDIR = 'tensorboard'


def require_tensorboard():
    """torch.utils.tensorboard.SummaryWriter, or UserError if the `tensorboard` package is not installed."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it; checked first, also when cached)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError('--tensorboard needs the tensorboard package: pip install tensorboard '
                        '(or drop --tensorboard).') from None
    return SummaryWriter


class TensorBoard:
    """Scalars of one run in LOG_DIR/tensorboard/.

    Args:
        log_dir: the run folder (LOG_DIR).
        steps_per_epoch: optimizer steps per epoch (the training loader's length on this process).
        start_epoch: first epoch this process trains (> 1 when resuming); events an earlier process wrote from
            that epoch on are purged.
    """

    def __init__(self, log_dir, steps_per_epoch, start_epoch=1):
        writer = require_tensorboard()
        self.steps_per_epoch = steps_per_epoch
        # Events of an earlier process in this folder at or after our first step are dropped: the tail of a killed
        # run (also one killed before its first saved epoch, which restarts at epoch 1) or an --overwrite'n run.
        purge = (start_epoch - 1) * steps_per_epoch + 1
        self.writer = writer(os.path.join(log_dir, SUBDIR), purge_step=purge)

    def step(self, global_step, metrics):
        """AdversarialTrainer.train's `on_step`: `metrics` (loss, accuracies, lr; numbers or 0-dim tensors) at
        `global_step`."""
        for key, value in metrics.items():
            self.writer.add_scalar(f'train/{key}', float(value), global_step)

    def epoch(self, epoch, row):
        """A stats_adv.csv row (the numeric values; the empty test adversarial accuracy of epochs without that
        evaluation is skipped) as epoch/<column>, at the step of the epoch's last batch."""
        global_step = epoch * self.steps_per_epoch
        for key, value in row.items():
            try:
                value = float(value)
            except (TypeError, ValueError):  # '' when the test set was not attacked this epoch
                continue
            if key != 'epoch':
                self.writer.add_scalar(f'epoch/{key}', value, global_step)
        self.writer.flush()

    def close(self):
        self.writer.close()

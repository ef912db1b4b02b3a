"""train-wa.py --tensorboard: train/* and epoch/* scalars by optimizer step; a resume purges the steps it reruns."""
import os

from core.utils.errors import UserError


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
    """Scalars of one run; `start_epoch` > 1 when resuming, `steps_per_epoch` the loader's length on this process."""

    def __init__(self, log_dir, steps_per_epoch, start_epoch=1):
        writer = require_tensorboard()
        self.steps_per_epoch = steps_per_epoch
        # also the tail of a run killed before its first saved epoch (it restarts at 1), or an --overwrite'n run
        purge = (start_epoch - 1) * steps_per_epoch + 1
        self.writer = writer(os.path.join(log_dir, 'tensorboard'), purge_step=purge)

    def step(self, global_step, metrics):
        """AdversarialTrainer.train's `on_step`."""
        for key, value in metrics.items():
            self.writer.add_scalar(f'train/{key}', float(value), global_step)

    def epoch(self, epoch, row):
        """A stats_adv.csv row as epoch/<column>, at the step of the epoch's last batch."""
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

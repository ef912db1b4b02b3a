"""Cosine learning-rate schedule of RST (Carmon et al. 2019), the `--scheduler cosine` of train-wa.py."""
import math

from torch.optim.lr_scheduler import LRScheduler


class CosineLR(LRScheduler):
    """lr(e) = 0.5 max_lr (1 + cos(pi (e - 1) / epochs)) at epoch e = 1, 2, ... (docs/differences.md item 39)."""

    def __init__(self, optimizer, max_lr, epochs, last_epoch=-1):
        self.max_lr = max_lr
        self.epochs = epochs
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lr = 0.5 * self.max_lr * (1 + math.cos(math.pi * self.last_epoch / self.epochs))
        return [lr for _ in self.optimizer.param_groups]

"""The batch metrics of one training epoch, kept on the device, and the stop on a non-finite loss.

`EpochMetrics` collects each batch's metrics (0-dim tensors) without a host synchronisation and gives the
reference's epoch figures (`means`: the unweighted mean over batches, docs/differences.md items 1 and 7);
`check_finite` raises `NonFiniteLoss` (docs/differences.md item 45).
"""
import time

import pandas as pd
import torch

from core.utils.distributed import all_reduce_sum
from core.utils.errors import UserError

__all__ = ['EpochMetrics', 'NonFiniteLoss', 'NONFINITE_CHECK_EVERY', 'FP16_SKIP_TOLERANCE', 'bar_redraws_next']


class NonFiniteLoss(UserError):
    """The training loss was not finite (NaN or inf): raised by `AdversarialTrainer.train` before the epoch ends.

    Attributes: epoch, batch (1-based index of the first non-finite batch of the epoch; 0 if it was seen on
    another DDP process only), num_batches, value (the loss there, a float).
    """

    def __init__(self, epoch, batch, num_batches, value):
        self.epoch, self.batch, self.num_batches, self.value = epoch, batch, num_batches, value
        where = f'batch {batch} of {num_batches}' if batch else 'a batch of another process'
        super().__init__(f'epoch {epoch}, {where}: the training loss is {value} (not finite)')


# Checks of the device-side non-finite flag: every batch on the CPU (reading a CPU tensor costs nothing), every
# NONFINITE_CHECK_EVERY batches elsewhere (one host synchronisation each). fp16: a non-finite loss is a step the
# GradScaler skips (it then halves the scale); only this many in a row stop the run.
NONFINITE_CHECK_EVERY = 32
FP16_SKIP_TOLERANCE = 16


class EpochMetrics:
    """The batch metrics of one epoch, kept on the device; the host reads them only in `means` and `check_finite`.

    Each batch's dict of 0-dim tensors becomes one float64 row (float64 holds the float32 values exactly, as the
    reference's `.item()` does). `means` is the reference's epoch figure: a table of the batches (pandas), then
    its column means. The non-finite watch is sync-free too: a device counter of consecutive non-finite losses
    and the 1-based index and value of the batch where the counter first exceeded `tolerance`.
    """

    def __init__(self, device, tolerance=0):
        self.rows, self.keys, self.tolerance = [], None, tolerance
        self.streak = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)   # 0 = none yet
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, metrics):
        if self.keys is None:
            self.keys = list(metrics)
        row = [metrics[k].detach().to(torch.float64) if torch.is_tensor(metrics[k])
               else torch.tensor(float(metrics[k]), dtype=torch.float64) for k in self.keys]
        self.rows.append(torch.stack([v.to(self.streak.device) for v in row]))
        loss = self.rows[-1][self.keys.index('loss')] if 'loss' in self.keys else self.rows[-1].sum()
        finite = torch.isfinite(loss)
        self.streak = torch.where(finite, torch.zeros_like(self.streak), self.streak + 1)
        hit = (self.first_bad == 0) & (self.streak > self.tolerance)
        self.first_bad = torch.where(hit, torch.full_like(self.first_bad, len(self.rows)), self.first_bad)
        self.bad_value = torch.where(hit, loss, self.bad_value)

    def check_finite(self, epoch, num_batches, runtime):
        """Raise NonFiniteLoss if a loss was not finite (under DDP: on any process; every process raises)."""
        first, value = int(self.first_bad), float(self.bad_value)
        if runtime.distributed:
            if all_reduce_sum([1.0 if first else 0.0], runtime)[0] == 0:
                return
        elif not first:
            return
        raise NonFiniteLoss(epoch, first, num_batches, value if first else float('nan'))

    def means(self):
        """{metric: mean over the batches so far} as Python floats (keys in first-seen order)."""
        if not self.rows:
            return {}
        values = torch.stack(self.rows).cpu().tolist()
        return {k: float(v) for k, v in pd.DataFrame(values, columns=self.keys).mean().items()}


def bar_redraws_next(bar, n):
    """Whether tqdm will redraw `bar` when iteration `n` (1-based) ends: tqdm's own test (miniters, mininterval)."""
    if getattr(bar, 'disable', True):
        return False
    return n - bar.last_print_n >= bar.miniters and time.time() - bar.last_print_t >= bar.mininterval

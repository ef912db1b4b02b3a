"""One epoch's batch metrics on the device, unweighted means, a non-finite loss stops (docs/differences.md 1, 7, 45)."""
import time

import pandas as pd
import torch

from core.utils.distributed import all_reduce_sum
from core.utils.errors import UserError


class NonFiniteLoss(UserError):
    """The training loss was not finite; batch: 1-based, 0 if seen on another DDP process only."""

    def __init__(self, epoch, batch, num_batches, value):
        self.epoch, self.batch, self.num_batches, self.value = epoch, batch, num_batches, value
        where = f'batch {batch} of {num_batches}' if batch else 'a batch of another process'
        super().__init__(f'epoch {epoch}, {where}: the training loss is {value} (not finite)')


# A host sync reads the non-finite flag every NONFINITE_CHECK_EVERY GPU batches; fp16 stops after this many skips.
NONFINITE_CHECK_EVERY = 32
FP16_SKIP_TOLERANCE = 16


class EpochMetrics:
    """Batch metrics as float64 device rows (exact, as the reference's `.item()`), read by the host only when asked."""

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
        """Raise NonFiniteLoss if a loss was not finite (under DDP on any process, on every process)."""
        first, value = int(self.first_bad), float(self.bad_value)
        if all_reduce_sum([1.0 if first else 0.0], runtime)[0] == 0:  # under DDP a collective
            return
        raise NonFiniteLoss(epoch, first, num_batches, value if first else float('nan'))

    def state_dict(self):
        """The batches so far as CPU tensors (a mid-epoch state file)."""
        return {'keys': self.keys, 'rows': torch.stack(self.rows).cpu() if self.rows else torch.zeros(0),
                'streak': self.streak.cpu(), 'first_bad': self.first_bad.cpu(), 'bad_value': self.bad_value.cpu()}

    def load_state_dict(self, state):
        device = self.streak.device
        self.keys, self.rows = state['keys'], [r.to(device) for r in state['rows']]
        self.streak, self.first_bad, self.bad_value = (state[k].to(device) for k in ('streak', 'first_bad',
                                                                                      'bad_value'))

    def means(self):
        """{metric: mean over the batches so far} (pandas' column means, as the reference)."""
        if not self.rows:
            return {}
        values = torch.stack(self.rows).cpu().tolist()
        return {k: float(v) for k, v in pd.DataFrame(values, columns=self.keys).mean().items()}


def bar_redraws_next(bar, n):
    """Whether tqdm will redraw `bar` when iteration `n` (1-based) ends (tqdm's own test)."""
    if getattr(bar, 'disable', True):
        return False
    return n - bar.last_print_n >= bar.miniters and time.time() - bar.last_print_t >= bar.mininterval

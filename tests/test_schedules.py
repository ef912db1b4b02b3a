"""schedules.py: the one rule on the epochs a schedule can run (check_epochs) against torch's OneCycleLR."""
import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from core.training.schedules import COSINEW_PCT_START, SCHEDULERS, check_epochs
from core.utils.errors import UserError


def test_check_epochs_refuses_exactly_where_torch_divides_by_zero():
    """cosinew's warm-up ends at step 0.025 * E - 1; torch divides by that length, so E = 40 (and only 40) fails."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for epochs in range(1, 201):
        try:
            OneCycleLR(optimizer, max_lr=0.1, pct_start=COSINEW_PCT_START, total_steps=epochs)
            torch_fails = False
        except ZeroDivisionError:
            torch_fails = True
        if torch_fails:
            with pytest.raises(UserError, match=f'--scheduler cosinew cannot run {epochs} epochs'):
                check_epochs('cosinew', epochs)
        else:
            check_epochs('cosinew', epochs)
    with pytest.raises(UserError):
        check_epochs('cosinew', 40)
    for scheduler in SCHEDULERS:
        if scheduler != 'cosinew':
            check_epochs(scheduler, 40)  # the others have no such warm-up

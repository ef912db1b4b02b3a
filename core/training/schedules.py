"""The optimiser and the learning-rate schedules of train-wa.py and train.py, built once per run."""
import math

import torch
from torch.optim.lr_scheduler import MultiStepLR, OneCycleLR

from core.training.rst import CosineLR
from core.utils.errors import UserError

SCHEDULERS = ('cyclic', 'step', 'cosine', 'cosinew')
PER_BATCH_SCHEDULERS = ('cyclic',)  # stepped after every batch; the others after every epoch
COSINEW_PCT_START = 0.025  # cosinew's warm-up: 2.5% of the epochs


def update_steps(data, batch_size):
    """The reference's floor(N / batch_size) + 1 with its hard-coded N (docs/differences.md item 15)."""
    num_samples = 50000 if 'cifar' in data else 73257
    num_samples = 100000 if 'tiny-imagenet' in data else num_samples
    return int(math.floor(num_samples / batch_size) + 1)


def param_groups(model, weight_averaging):
    """One group, or with weight averaging two: names with `batchnorm` undecayed (docs/differences.md item 18)."""
    if not weight_averaging:
        return [{'params': list(model.parameters())}]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if 'batchnorm' in name else decay).append(p)
    return [{'params': decay}, {'params': no_decay, 'weight_decay': .0}]


def build_optimizer(model, args, weight_averaging):
    return torch.optim.SGD(param_groups(model, weight_averaging), lr=args.lr, weight_decay=args.weight_decay,
                           momentum=0.9, nesterov=args.nesterov)


def check_epochs(scheduler, num_epochs):
    """UserError for cosinew where 0.025 * epochs = 1: OneCycleLR divides by zero (docs/differences.md item 43)."""
    if scheduler == 'cosinew' and float(COSINEW_PCT_START * num_epochs) - 1 == 0:
        raise UserError(f'--scheduler cosinew cannot run {num_epochs} epochs: torch OneCycleLR divides by zero when '
                        f'0.025 * epochs = 1 (the reference crashes too); use e.g. 41 epochs.')


def build_scheduler(optimizer, args, num_epochs):
    """The `--scheduler` as the reference (docs/differences.md item 39); OneCycleLR cycles momentum (item 19)."""
    if args.scheduler == 'cyclic':
        return OneCycleLR(optimizer, max_lr=args.lr, pct_start=0.25, epochs=int(num_epochs),
                          steps_per_epoch=update_steps(args.data, args.batch_size))
    if args.scheduler == 'step':
        return MultiStepLR(optimizer, gamma=0.1, milestones=[100, 105])
    if args.scheduler == 'cosine':
        return CosineLR(optimizer, max_lr=args.lr, epochs=int(num_epochs))
    if args.scheduler == 'cosinew':
        check_epochs(args.scheduler, num_epochs)
        return OneCycleLR(optimizer, max_lr=args.lr, pct_start=COSINEW_PCT_START, total_steps=int(num_epochs))
    raise UserError(f'--scheduler {args.scheduler}: choose one of {", ".join(SCHEDULERS)}.')


def rescale_lr(optimizer, scheduler, ratio):
    """Every learning rate times `ratio`, for a resume with another --lr (docs/differences.md item 45)."""
    for group in optimizer.param_groups:
        for key in ('lr', 'initial_lr', 'max_lr', 'min_lr'):
            if key in group:
                group[key] *= ratio
    scheduler.base_lrs = [v * ratio for v in scheduler.base_lrs]
    scheduler._last_lr = [v * ratio for v in scheduler._last_lr]
    if isinstance(getattr(scheduler, 'max_lr', None), float):  # CosineLR
        scheduler.max_lr *= ratio

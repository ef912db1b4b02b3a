"""Small helpers shared by the training and evaluation scripts."""
import argparse
import datetime

import numpy as np
import torch
import torch.nn as nn


def str2bool(v):
    """Parse yes/true/t/y/1 and no/false/f/n/0 (any case); a bool passes through."""
    if isinstance(v, bool):
        return v
    if v.lower() in ('yes', 'true', 't', 'y', '1'):
        return True
    if v.lower() in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f'Boolean value expected, got {v!r}.')


def str2float(x):
    """Parse a float or a fraction `a/b` (so `8/255` works on the command line)."""
    if isinstance(x, (int, float)):
        return float(x)
    try:
        if '/' in x:
            num, den = x.split('/')
            if float(den) == 0:
                raise argparse.ArgumentTypeError(f'{x!r}: the divisor is 0 (e.g. 8/255).')
            return float(num) / float(den)
        return float(x)
    except ValueError:
        raise argparse.ArgumentTypeError(f'a number or a fraction a/b expected, got {x!r}.') from None


def seed(seed=1):
    """Seed numpy, torch and CUDA as the reference (Python `random` untouched; docs/differences.md item 41)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def format_time(elapsed):
    return str(datetime.timedelta(seconds=int(round(elapsed))))


def set_bn_momentum(model, momentum=1.0):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum

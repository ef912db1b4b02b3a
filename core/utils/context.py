"""Context managers that set a model's mode and parameter gradients and restore them exactly, also on exceptions."""
from contextlib import contextmanager

import torch.nn as nn


@contextmanager
def ctx_noparamgrad(module: nn.Module):
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def ctx_eval(module: nn.Module):
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


@contextmanager
def ctx_noparamgrad_and_eval(module: nn.Module):
    """The attack context of the reference."""
    with ctx_noparamgrad(module), ctx_eval(module):
        yield module

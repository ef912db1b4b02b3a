"""Projected gradient descent, L-inf and L2."""
import functools
import math

import torch

from .base import Attack
from .utils import ascend, clamp_by_pnorm, normalize_by_pnorm


class PGDAttack(Attack):
    """PGD with a random start (Madry et al., ICLR 2018), L-inf or L2; 'normal' starts 0.001 N(0, 1), as TRADES."""

    def __init__(self, model, loss_fn=None, eps=0.3, eps_iter=0.01, nb_iter=40, rand_init=True, ord=math.inf,
                 rand_init_type='uniform'):
        super().__init__(model, loss_fn)
        if ord not in (math.inf, 2):
            raise NotImplementedError('Only ord=inf and ord=2 have been implemented.')
        if rand_init_type not in ('uniform', 'normal'):
            raise NotImplementedError('Only rand_init_type=normal and rand_init_type=uniform have been implemented.')
        self.eps, self.nb_iter, self.eps_iter, self.ord = eps, nb_iter, eps_iter, ord
        self.rand_init, self.rand_init_type = rand_init, rand_init_type

    def _init_delta(self, x):
        if not self.rand_init:
            return torch.zeros_like(x)
        if self.rand_init_type == 'normal':
            return 0.001 * torch.randn_like(x)
        delta = torch.zeros_like(x)
        if self.ord == math.inf:
            delta = self.eps * delta.uniform_(-1, 1)
        else:
            delta = clamp_by_pnorm(delta.uniform_(0., 1.) - x, 2, self.eps)
        delta = torch.clamp(x + delta, min=0., max=1.) - x
        return torch.clamp(x + delta, min=0., max=1.) - x

    def _update(self, x):
        eps, step = self.eps, self.eps_iter

        def linf(delta, grad):
            delta = torch.clamp(delta + step * grad.sign(), min=-eps, max=eps)
            return torch.clamp(x + delta, 0., 1.) - x

        def l2(delta, grad):
            delta = delta + step * normalize_by_pnorm(grad)
            return clamp_by_pnorm(torch.clamp(x + delta, 0., 1.) - x, 2, eps)
        return linf if self.ord == math.inf else l2

    def _perturb(self, x, y):
        delta = ascend(self.model, self._objective(y), x, self._init_delta(x), self._update(x), self.nb_iter)
        return torch.clamp(x + delta, 0., 1.)


class LinfPGDAttack(PGDAttack):
    __init__ = functools.partialmethod(PGDAttack.__init__, ord=math.inf)


class L2PGDAttack(PGDAttack):
    __init__ = functools.partialmethod(PGDAttack.__init__, ord=2)

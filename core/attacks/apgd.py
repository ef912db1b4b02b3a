"""AutoAttack's APGD as an attack, L-inf and L2 (docs/differences.md item 3 fixed)."""
import functools
import math

import torch

from core.attacks.autoattack import APGDAttack, require_autoattack

from .base import Attack


class APGD(Attack):
    """AutoAttack's Auto-PGD (Croce & Hein, ICML 2020), reseeded per batch in fork_rng (docs/differences.md item 3)."""

    def __init__(self, model, loss_fn='ce', n_restarts=2, eps=0.3, nb_iter=40, ord=math.inf):
        require_autoattack()
        super().__init__(model, 'ce')
        self.eps, self.nb_iter, self.n_restarts, self.ord = eps, nb_iter, n_restarts, ord
        self.apgd = APGDAttack(model, n_restarts=n_restarts, n_iter=nb_iter, verbose=False, eps=eps,
                               norm='Linf' if ord == math.inf else 'L2', eot_iter=1, rho=.75, seed=1, device=None)
        self.apgd.loss = 'ce'

    def _perturb(self, x, y):
        # AutoAttack `.view`s its input gradient, which fails on a channels_last batch: same values, contiguous
        x = x.contiguous()
        self.apgd.device = x.device
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            out = self.apgd.perturb(x, y)
        x_adv = out[1] if isinstance(out, (tuple, list)) else out
        return x_adv.to(x.dtype)


class LinfAPGDAttack(APGD):
    __init__ = functools.partialmethod(APGD.__init__, ord=math.inf)


class L2APGDAttack(APGD):
    __init__ = functools.partialmethod(APGD.__init__, ord=2)

"""Projected gradient descent, L-inf and L2."""
import math

import torch
import torch.nn as nn

from .base import Attack
from .utils import ascend, batch_clamp, clamp, clamp_by_pnorm, is_linf, normalize_by_pnorm, rand_init_delta


class PGDAttack(Attack):
    r"""PGD with a random start.

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.

    Threat model: ||x_adv - x||_ord <= eps (ord = inf or 2), x_adv in [clip_min, clip_max].

    Each step: ord inf: delta <- clamp(delta + eps_iter * sign(grad), -eps, eps);
               ord 2:   delta <- delta + eps_iter * grad / max(||grad||_2, 1e-6);
    then delta <- clamp(x + delta, clip_min, clip_max) - x, and for ord 2 the projection
    delta <- delta * min(eps / ||delta||_2, 1). Finally x_adv = clamp(x + delta, clip_min, clip_max).

    Arguments:
        model (nn.Module): images (B, C, H, W) -> logits (B, K).
        loss_fn (callable): loss(logits, y) -> scalar. Default: None = CrossEntropyLoss(reduction='sum').
        eps (float): radius of the ball. Default: 0.3.
        eps_iter (float): step size. Default: 0.01.
        nb_iter (int): number of steps. Default: 40.
        rand_init (bool): random start. Default: True.
        clip_min (float): lower image bound. Default: 0.
        clip_max (float): upper image bound. Default: 1.
        ord (float): math.inf (np.inf) or 2. Default: math.inf.
        targeted (bool): minimise the loss of y instead. Default: False.
        rand_init_type (str): 'uniform' (see `rand_init_delta`, then one more box clamp) or 'normal'
            (delta = 0.001 * N(0, 1), no clamp, as TRADES). Default: 'uniform'.

    Shapes: x (B, C, H, W) in [clip_min, clip_max], y (B,) int64 -> x_adv (B, C, H, W).
    The random start uses the generator of x's device.
    """

    def __init__(self, model, loss_fn=None, eps=0.3, eps_iter=0.01, nb_iter=40, rand_init=True, clip_min=0.,
                 clip_max=1., ord=math.inf, targeted=False, rand_init_type='uniform'):
        super().__init__(model, loss_fn, clip_min, clip_max, targeted)
        if not (is_linf(ord) or ord == 2):
            raise NotImplementedError('Only ord=inf and ord=2 have been implemented.')
        if rand_init_type not in ('uniform', 'normal'):
            raise NotImplementedError('Only rand_init_type=normal and rand_init_type=uniform have been implemented.')
        self.eps = eps
        self.nb_iter = nb_iter
        self.eps_iter = eps_iter
        self.rand_init = rand_init
        self.rand_init_type = rand_init_type
        self.ord = ord
        if self.loss_fn is None:
            self.loss_fn = nn.CrossEntropyLoss(reduction='sum')

    def _init_delta(self, x):
        if not self.rand_init:
            return torch.zeros_like(x)
        if self.rand_init_type == 'normal':
            return 0.001 * torch.randn_like(x)
        delta = rand_init_delta(x, self.ord, self.eps, self.clip_min, self.clip_max)
        return clamp(x + delta, min=self.clip_min, max=self.clip_max) - x

    def _update(self, x):
        lo, hi, eps, step = self.clip_min, self.clip_max, self.eps, self.eps_iter

        def linf(delta, grad):
            delta = batch_clamp(eps, delta + step * grad.sign())
            return clamp(x + delta, lo, hi) - x

        def l2(delta, grad):
            delta = delta + step * normalize_by_pnorm(grad)
            return clamp_by_pnorm(clamp(x + delta, lo, hi) - x, self.ord, eps)
        return linf if is_linf(self.ord) else l2

    def _perturb(self, x, y):
        delta = ascend(self.model, self._objective(y), x, self._init_delta(x), self._update(x), self.nb_iter)
        return clamp(x + delta, self.clip_min, self.clip_max)


class LinfPGDAttack(PGDAttack):
    """PGD in the L-inf ball (see `PGDAttack`; ord = inf). Same arguments except `ord`."""

    def __init__(self, model, loss_fn=None, eps=0.3, eps_iter=0.01, nb_iter=40, rand_init=True, clip_min=0.,
                 clip_max=1., targeted=False, rand_init_type='uniform'):
        super().__init__(model, loss_fn=loss_fn, eps=eps, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=rand_init,
                         clip_min=clip_min, clip_max=clip_max, ord=math.inf, targeted=targeted,
                         rand_init_type=rand_init_type)


class L2PGDAttack(PGDAttack):
    """PGD in the L2 ball (see `PGDAttack`; ord = 2). Same arguments except `ord`."""

    def __init__(self, model, loss_fn=None, eps=0.3, eps_iter=0.01, nb_iter=40, rand_init=True, clip_min=0.,
                 clip_max=1., targeted=False, rand_init_type='uniform'):
        super().__init__(model, loss_fn=loss_fn, eps=eps, eps_iter=eps_iter, nb_iter=nb_iter, rand_init=rand_init,
                         clip_min=clip_min, clip_max=clip_max, ord=2, targeted=targeted,
                         rand_init_type=rand_init_type)

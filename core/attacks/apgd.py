"""Wrapper over AutoAttack's APGD, L-inf and L2 (docs/differences.md item 3 fixed)."""
import math

import torch

from core.attacks.autoattack import APGDAttack, require_autoattack

from .base import Attack
from .utils import is_linf


class APGD(Attack):
    r"""Auto-PGD: step-size-free PGD with momentum and restarts (AutoAttack's implementation).

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020.

    Threat model: ||x_adv - x||_ord <= eps (ord = inf or 2), x_adv in [0, 1].
    Builds `APGDAttack(n_restarts, n_iter=nb_iter, verbose=False, eps, norm 'Linf'/'L2', eot_iter=1, rho=0.75,
    seed)` and returns the adversarial batch of its `perturb` (samples APGD does not fool come back unchanged).

    Fixes of the reference: a loss module passed by `create_attack` as `loss_fn` selects 'ce' (the
    reference asserted and crashed); `LinfAPGDAttack` calls the right super(); the adversarial tensor is taken
    whether `perturb` returns it (current AutoAttack) or an old-style `(acc, x_adv)` tuple (docs/differences.md
    item 3).
    APGD calls `torch.manual_seed(seed)` on every batch; here it runs inside `torch.random.fork_rng`, so the
    global CPU/CUDA random streams of the caller (samplers, noise) are left untouched.

    Arguments:
        model (nn.Module): images (B, C, H, W) in [0, 1] -> logits (B, K).
        loss_fn (str or callable): 'ce' or 'dlr'; any non-string (e.g. a criterion module) means 'ce'. Default: 'ce'.
        n_restarts (int): random restarts. Default: 2.
        eps (float): radius of the ball. Default: 0.3.
        nb_iter (int): iterations per restart. Default: 40.
        ord (float): math.inf or 2. Default: math.inf.
        seed (int): APGD's seed for its random starts. Default: 1.

    Shapes: x (B, C, H, W), y (B,) int64 -> x_adv (B, C, H, W). The image box is AutoAttack's [0, 1].
    """

    def __init__(self, model, loss_fn='ce', n_restarts=2, eps=0.3, nb_iter=40, ord=math.inf, seed=1):
        require_autoattack()
        loss = loss_fn if isinstance(loss_fn, str) else 'ce'
        if loss not in ('ce', 'dlr'):
            raise ValueError(f'Only loss_fn=ce or loss_fn=dlr are supported, got {loss_fn!r}.')
        if not (is_linf(ord) or ord == 2):
            raise NotImplementedError('Only ord=inf or ord=2 are supported.')
        super().__init__(model, loss, 0., 1., targeted=False)
        self.eps, self.nb_iter, self.n_restarts, self.ord, self.seed = eps, nb_iter, n_restarts, ord, seed
        self.apgd = APGDAttack(model, n_restarts=n_restarts, n_iter=nb_iter, verbose=False, eps=eps,
                               norm='Linf' if is_linf(ord) else 'L2', eot_iter=1, rho=.75, seed=seed, device=None)
        self.apgd.loss = loss

    def _perturb(self, x, y):
        # AutoAttack `.view`s its input gradient: with a channels_last model and batch (--channels-last) that
        # gradient is channels_last and the view fails, so APGD gets a contiguous batch (same values).
        x = x.contiguous()
        self.apgd.device = x.device
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            out = self.apgd.perturb(x, y)
        x_adv = out[1] if isinstance(out, (tuple, list)) else out
        return x_adv.to(x.dtype)

    def __repr__(self):
        return (f'{type(self).__name__}(loss={self.loss_fn}, n_restarts={self.n_restarts}, eps={self.eps}, '
                f'nb_iter={self.nb_iter}, ord={self.ord}, seed={self.seed})')


class LinfAPGDAttack(APGD):
    """APGD in the L-inf ball (see `APGD`; ord = inf). Same arguments except `ord`."""

    def __init__(self, model, loss_fn='ce', n_restarts=2, eps=0.3, nb_iter=40, seed=1):
        super().__init__(model, loss_fn=loss_fn, n_restarts=n_restarts, eps=eps, nb_iter=nb_iter, ord=math.inf,
                         seed=seed)


class L2APGDAttack(APGD):
    """APGD in the L2 ball (see `APGD`; ord = 2). Same arguments except `ord`."""

    def __init__(self, model, loss_fn='ce', n_restarts=2, eps=0.3, nb_iter=40, seed=1):
        super().__init__(model, loss_fn=loss_fn, n_restarts=n_restarts, eps=eps, nb_iter=nb_iter, ord=2, seed=seed)

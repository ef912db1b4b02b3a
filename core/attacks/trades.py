"""The inner maximisations of TRADES, SCORE and MART as attacks, CPU random starts (docs/differences.md item 2)."""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks.utils import cpu_draw, l2_sgd_ascent, linf_sign_ascent
from core.losses.divergences import kl_div_batchmean, squared_error_sum
from core.utils.context import ctx_eval
from core.utils.errors import UserError

DIVERGENCES = {'kl': kl_div_batchmean, 'lse': squared_error_sum}
INNER_ATTACKS = ('linf-pgd', 'l2-pgd')  # the --attack values of the TRADES / SCORE inner maximisations


def check_attack(attack, attacks, trained):
    if attack not in attacks:
        raise UserError(f'attack {attack!r} is not supported by {trained}; use --attack {" or ".join(attacks)}.')


@contextmanager
def ctx_batch_stats(model: nn.Module):
    """Train mode with BatchNorm `track_running_stats = False` (batch statistics, no update), restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    bns = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train()
    for m, _ in bns:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, flag in bns:
            m.track_running_stats = flag
        for m, mode in modes:
            m.training = mode


class TradesInnerMax:
    """TRADES / SCORE argmax of D(P, model(x')) ('kl' / 'lse') in `ctx_batch_stats`; L2 SGD after the L-inf draw."""

    ATTACKS = INNER_ATTACKS  # the --attack values it takes (core/training/objectives.py reads them)

    def __init__(self, model, divergence='kl', attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
        if divergence not in DIVERGENCES:
            raise UserError(f'unknown divergence {divergence!r}; use one of {sorted(DIVERGENCES)}.')
        check_attack(attack, self.ATTACKS, 'TRADES/LSE training')
        self.model, self.divergence, self.attack = model, DIVERGENCES[divergence], attack
        self.eps, self.step, self.iters = eps, step, iters

    def __call__(self, x, target_probs):
        with ctx_batch_stats(self.model), torch.enable_grad():
            return self._perturb(x.detach(), target_probs.detach())

    def _perturb(self, x, p):
        eps = self.eps
        noise = cpu_draw(x.shape, x.device, lambda t: t.uniform_(-eps, eps))
        x_adv = torch.clamp(x + noise, 0.0, 1.0)
        if self.attack == 'linf-pgd':
            x_adv = linf_sign_ascent(self.model, lambda z: self.divergence(p, z), x, x_adv, eps, self.step,
                                     self.iters)
        else:
            delta = 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            x_adv = x + l2_sgd_ascent(self.model, lambda z: self.divergence(p, z), x, delta, eps, self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()


class TradesPlainInnerMax:
    """TRADES of the plain trainer (`--tau 0`) in eval mode, on the summed KL to softmax(model(x)); L2 draws twice."""

    ATTACKS = INNER_ATTACKS

    def __init__(self, model, attack='linf-pgd', eps=0.031, step=0.003, iters=10):
        check_attack(attack, self.ATTACKS, 'TRADES training')
        self.model, self.attack, self.eps, self.step, self.iters = model, attack, eps, step, iters

    def __call__(self, x, y=None):
        x, model = x.detach(), self.model
        with ctx_eval(model), torch.enable_grad():
            with torch.no_grad():
                p_nat = F.softmax(model(x), dim=1)
            x_adv = x + 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            kl_sum = lambda z: F.kl_div(F.log_softmax(z, dim=1), p_nat, reduction='sum')  # noqa: E731
            if self.attack == 'linf-pgd':
                x_adv = linf_sign_ascent(model, kl_sum, x, x_adv, self.eps, self.step, self.iters)
            else:
                delta = 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
                x_adv = x + l2_sgd_ascent(model, kl_sum, x, delta, self.eps, self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()


class MartInnerMax:
    """MART's inner maximisation: L-inf sign ascent on the mean CE from x + 0.001 N(0, 1) (unclamped), in eval mode."""

    ATTACKS = ('linf-pgd',)

    def __init__(self, model, attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
        check_attack(attack, self.ATTACKS, 'MART training')
        self.model, self.eps, self.step, self.iters = model, eps, step, iters

    def __call__(self, x, y):
        x = x.detach()
        with ctx_eval(self.model), torch.enable_grad():
            x_adv = x + 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            x_adv = linf_sign_ascent(self.model, lambda z: F.cross_entropy(z, y), x, x_adv, self.eps, self.step,
                                     self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()

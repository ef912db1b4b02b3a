"""The inner maximisations of adversarial training as attack objects: `attack(x, y_or_target) -> x_adv`.

* `TradesInnerMax`: TRADES (KL) and SCORE (local squared error) of the weight-averaging trainer; one loop, the
  divergence is a parameter (as torchattacks' TPGD is TRADES's inner loop);
* `TradesPlainInnerMax`: TRADES of the plain trainer (`--tau 0`): eval mode, summed KL to the eval-mode prediction;
* `MartInnerMax`: MART (L-inf PGD on the mean cross-entropy, eval mode).

Gradients are taken w.r.t. the input only (`torch.autograd.grad`), so no parameter `.grad` is created or changed;
each attack restores the model's modes (and BatchNorm tracking flags) as found, also on an exception. Random
starts are drawn from the CPU generator (float32) and moved to the input's device, in the reference's order
(docs/differences.md item 2).

Papers: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019 (TRADES);
Pang et al., "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition", ICML 2022 (SCORE);
Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020 (MART).
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks.utils import cpu_draw, l2_sgd_ascent, linf_sign_ascent
from core.losses.divergences import kl_div_batchmean, squared_error_sum
from core.utils.context import ctx_eval
from core.utils.errors import UserError

__all__ = ['DIVERGENCES', 'INNER_ATTACKS', 'check_attack', 'ctx_batch_stats', 'TradesInnerMax', 'TradesPlainInnerMax',
           'MartInnerMax']


DIVERGENCES = {'kl': kl_div_batchmean, 'lse': squared_error_sum}
INNER_ATTACKS = ('linf-pgd', 'l2-pgd')  # the --attack values of the TRADES / SCORE inner maximisations


def check_attack(attack, attacks, trained):
    """A UserError (a ValueError) unless `attack` is one of `attacks`, the --attack values of `trained`."""
    if attack not in attacks:
        raise UserError(f'attack {attack!r} is not supported by {trained}; use --attack {" or ".join(attacks)}.')


# ----------------------------------------------------------------------------------------------------------
# Inner maximisation
# ----------------------------------------------------------------------------------------------------------

@contextmanager
def ctx_batch_stats(model: nn.Module):
    """Train mode with `track_running_stats = False` on every BatchNorm, restored exactly on exit.

    Inside, BatchNorm normalises with the batch statistics and updates neither the running statistics
    nor `num_batches_tracked` (the state TRADES/LSE run their target and attack forwards in).
    """
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
    """TRADES / SCORE inner maximisation: x_adv = argmax_{x' in B(x, eps)} D(P, model(x')).

    Papers: Zhang et al. 2019 (TRADES, D = KL); Pang et al. 2022 (SCORE, D = squared error).
    Threat model: L-inf (sign ascent, `linf-pgd`) or L2 (normalised SGD on delta, `l2-pgd`), images in [0, 1].

    Args:
        model: the network; run in train mode with BatchNorm running-stat tracking off (batch statistics,
            no update); its modes and tracking flags are restored as found, also on an exception.
        divergence: 'kl' (`kl_div_batchmean`) or 'lse' (`squared_error_sum`). Default 'kl'.
        attack: 'linf-pgd' or 'l2-pgd'. Default 'linf-pgd'. Anything else raises UserError (a ValueError).
        eps: radius of the ball. Default 8/255.
        step: L-inf step size (unused by the L2 branch, whose SGD rate is 2*eps/iters). Default 2/255.
        iters: number of steps T. Default 10.

    Call: `attack(x, target_probs) -> x_adv`, x (B, C, H, W) in [0, 1], target_probs (B, K) detached
    probabilities; x_adv (B, C, H, W) detached, in [0, 1], within eps of x.

    Random initialisation, drawn from the CPU generator (float32) and then moved to x's device (`cpu_draw`), as
    the reference does (it matters for the RNG stream): L-inf x + U(-eps, eps) clamped to [0, 1]; L2
    delta = 0.001 * N(0, 1). The L-inf init is drawn for both branches (the reference draws it first).
    """

    ATTACKS = INNER_ATTACKS  # the --attack values it takes (core/training/objectives.py reads them)

    def __init__(self, model, divergence='kl', attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
        if divergence not in DIVERGENCES:
            raise UserError(f'unknown divergence {divergence!r}; use one of {sorted(DIVERGENCES)}.')
        check_attack(attack, self.ATTACKS, 'TRADES/LSE training')
        self.model = model
        self.divergence = DIVERGENCES[divergence]
        self.attack = attack
        self.eps = eps
        self.step = step
        self.iters = iters

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
        else:  # 'l2-pgd': plain SGD (no momentum) on delta, rate 2*eps/T, on the negated divergence
            delta = 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            x_adv = x + l2_sgd_ascent(self.model, lambda z: self.divergence(p, z), x, delta, eps, self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()


class TradesPlainInnerMax:
    """TRADES inner maximisation of the plain trainer (`--tau 0`; Zhang et al., ICML 2019), L-inf or L2.

    In eval mode: the target p = softmax(model(x)) (no grad), the start x + 0.001 N(0, 1) (a CPU draw, for both
    threat models, as the reference), then on the summed KL(p || softmax(model(x'))): `linf-pgd` T sign-ascent
    steps with projection to the eps-box and [0, 1]; `l2-pgd` x' = x + delta, delta = 0.001 N(0, 1) (a second
    CPU draw) after T steps of `l2_sgd_ascent` (SGD at 2 eps / T on the per-sample normalised gradient, clamp to
    [0, 1], renorm to eps).

    Args:
        model: the plain network (no DDP / compile wrapper); its mode is restored as found.
        attack: 'linf-pgd' or 'l2-pgd'; anything else raises UserError (a ValueError).
        eps: radius. Default 0.031. step: L-inf step size. Default 0.003. iters: T. Default 10.

    Call: `attack(x, y=None) -> x_adv` (y unused), x (B, C, H, W) in [0, 1]; x_adv detached, in [0, 1].
    """

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
    """MART's inner maximisation: L-inf PGD on mean CE(model(x'), y) from x + 0.001 * N(0, 1).

    Paper: Wang et al., ICLR 2020. Threat model: L-inf ball of radius eps, images in [0, 1].

    Args:
        model: the network; run in eval mode (restored as found, also on an exception). Parameters keep
            requiring grad as in the reference, but gradients are taken w.r.t. the input only, so no
            parameter `.grad` is touched.
        attack: only 'linf-pgd'; anything else raises UserError (a ValueError).
        eps: radius. Default 8/255. step: step size. Default 2/255. iters: T. Default 10.

    Call: `attack(x, y) -> x_adv`, x (B, C, H, W) in [0, 1], y (B,) int64; x_adv detached, in [0, 1], within
    eps of x. The initial noise comes from the CPU generator (float32) and is moved to x's device; the start
    point is not clamped (as in the reference; the first step clamps).
    """

    ATTACKS = ('linf-pgd',)

    def __init__(self, model, attack='linf-pgd', eps=8 / 255, step=2 / 255, iters=10):
        check_attack(attack, self.ATTACKS, 'MART training')
        self.model, self.eps, self.step, self.iters = model, eps, step, iters

    def __call__(self, x, y):
        x = x.detach()
        eps = self.eps
        with ctx_eval(self.model), torch.enable_grad():
            x_adv = x + 0.001 * cpu_draw(x.shape, x.device, lambda t: t.normal_())
            x_adv = linf_sign_ascent(self.model, lambda z: F.cross_entropy(z, y), x, x_adv, eps, self.step,
                                     self.iters)
        return torch.clamp(x_adv, 0.0, 1.0).detach()

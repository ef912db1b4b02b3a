"""Weight averaging (EMA of parameters) of train-wa.py (Gowal et al., 2020): `EMA` and its pieces.

Paper: Gowal et al., "Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial
Examples", 2020 (weight averaging with a warm-up and a dynamic decay, the first-step BatchNorm momentum trick).

Policy: parameters are averaged in place in float32; buffers are NOT averaged (docs/differences.md item 40).
The BatchNorm running statistics of the averaged model are COPIED from the training model at the end of each
epoch (`update_bn`); the reference aliased them, which gave the same numbers where they are read
(docs/differences.md item 8).
The reference's names stay importable from gowal21uncovering/utils/ema.py.
"""
import torch
import torch.nn as nn

from core.utils.checkpoint import load_state_dict
from core.utils.utils import set_bn_momentum

__all__ = ['ema_decay', 'ema_update', 'update_bn', 'warmup_steps', 'bn_momentum_trick', 'EMA']


def ema_decay(global_step, warmup_steps=0, tau=0.999):
    """Decay at `global_step`: factor * min(tau, (1+d)/(10+d)), d = global_step - warmup_steps.

    factor = 1 if global_step >= warmup_steps else 0; the dynamic term is replaced by tau when 10 + d == 0.
    E.g. warmup 980.0: step 979 -> 0, 980 -> 0.1, 981 -> 2/11, 2770 -> 0.995 (tau 0.995).
    """
    factor = int(global_step >= warmup_steps)
    delta = global_step - warmup_steps
    decay = min(tau, (1. + delta) / (10. + delta)) if 10. + delta != 0 else tau
    return decay * factor


@torch.no_grad()
def ema_update(wa_model, model, global_step, decay_rate=0.999, warmup_steps=0):
    """theta_wa <- theta_wa * decay, then theta_wa <- theta_wa + theta * (1 - decay), parameters only, in place.

    Args:
        wa_model: the averaged model (same architecture as `model`).
        model: the training model.
        global_step: number of optimiser steps taken so far (1 after the first batch).
        decay_rate: tau. Default 0.999. warmup_steps: default 0 (may be a float).
    Returns:
        the decay used.
    """
    decay = ema_decay(global_step, warmup_steps, decay_rate)
    wa_params, params = list(wa_model.parameters()), list(model.parameters())
    if len(wa_params) != len(params):
        raise ValueError(f'ema_update: the averaged model has {len(wa_params)} parameters, the model {len(params)}.')
    for p_wa, p in zip(wa_params, params):
        p_wa.mul_(decay)
        p_wa.add_(p * (1 - decay))
    return decay


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def update_bn(wa_model, model):
    """Put both models in eval mode and copy BatchNorm running stats of `model` into `wa_model`.

    running_mean, running_var and num_batches_tracked are copied with `.copy_()` (never aliased), pairing
    the BatchNorm layers of the two models in module order.
    """
    wa_model.eval()
    model.eval()
    wa_bns, bns = _batchnorms(wa_model), _batchnorms(model)
    if len(wa_bns) != len(bns):
        raise ValueError(f'update_bn: the averaged model has {len(wa_bns)} BatchNorm layers, the model {len(bns)}.')
    for bn_wa, bn in zip(wa_bns, bns):
        for name in ('running_mean', 'running_var', 'num_batches_tracked'):
            src, dst = getattr(bn, name), getattr(bn_wa, name)
            if src is None or dst is None:
                if src is not dst:
                    raise ValueError(f'update_bn: {name} exists in only one of the two models.')
                continue
            dst.copy_(src)


def warmup_steps(num_adv_epochs, update_steps):
    """EMA warm-up length 0.025 * E * update_steps, a float (e.g. 400 epochs, 98 steps -> 980.0).

    update_steps is the reference's floor(N / bs) + 1 with its hard-coded N (docs/differences.md item 15).
    """
    return 0.025 * num_adv_epochs * update_steps


def bn_momentum_trick(model, step):
    """Before optimiser step `step` (0-based): momentum 1.0 on every BN at step 0, 0.01 at step 1.

    At step 0 the first running-stat update then copies the batch statistics ("as in Haiku"). 0.01 for every BN
    layer, also in model families whose default is 0.1, as the reference (docs/differences.md item 20).
    """
    if step == 0:
        set_bn_momentum(model, momentum=1.0)
    elif step == 1:
        set_bn_momentum(model, momentum=0.01)


class EMA:
    """The averaged model and its schedule: what the trainer does around each step and at each epoch's end.

    Per batch, with `step` optimiser steps taken before it (the reference's global step):
        `before_step(model, step)`  the BatchNorm momentum trick on the training model (1.0, then 0.01);
        `update(model, step + 1)`   theta_wa <- decay * theta_wa + (1 - decay) * theta, decay = `decay(step + 1)`.
    Per epoch: `update_bn(model)` copies the BatchNorm running statistics into the averaged model (both models
    are left in eval mode). Resume: `load_state_dict` (the averaged weights), then `restore_bn_momentum`.

    Args:
        wa_model: the averaged model (a deep copy of the training model, same architecture).
        tau: decay rate (--tau). Default 0.999.
        warmup_steps: steps during which the averaged weights are plain copies (`warmup_steps()`). Default 0.
    """

    def __init__(self, wa_model, tau=0.999, warmup_steps=0):
        self.wa_model, self.tau, self.warmup_steps = wa_model, tau, warmup_steps

    def decay(self, step):
        return ema_decay(step, self.warmup_steps, self.tau)

    def before_step(self, model, step):
        bn_momentum_trick(model, step)

    def update(self, model, step):
        return ema_update(self.wa_model, model, step, self.tau, self.warmup_steps)

    def update_bn(self, model):
        update_bn(self.wa_model, model)

    def restore_bn_momentum(self, model, global_step):
        """After a resume at `global_step`: the BatchNorm momentum the trick left (0.01 once a step was taken)."""
        if global_step >= 1:
            bn_momentum_trick(model, 1)

    def state_dict(self):
        return self.wa_model.state_dict()

    def load_state_dict(self, state):
        load_state_dict(self.wa_model, state)

"""Weight averaging of train-wa.py (Gowal et al., 2020) in float32 (docs/differences.md items 8 and 40)."""
import torch
import torch.nn as nn

from core.utils.checkpoint import load_state_dict
from core.utils.utils import set_bn_momentum


def ema_decay(global_step, warmup_steps=0, tau=0.999):
    """[global_step >= warmup_steps] * min(tau, (1 + d) / (10 + d)), d = global_step - warmup_steps (tau at d = -10)."""
    factor = int(global_step >= warmup_steps)
    delta = global_step - warmup_steps
    decay = min(tau, (1. + delta) / (10. + delta)) if 10. + delta != 0 else tau
    return decay * factor


@torch.no_grad()
def ema_update(wa_model, model, global_step, decay_rate=0.999, warmup_steps=0):
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
    """0.025 * epochs * update_steps, a float; update_steps with the reference's N (docs/differences.md item 15)."""
    return 0.025 * num_adv_epochs * update_steps


def bn_momentum_trick(model, step):
    """BatchNorm momentum 1.0 before step 0, 0.01 before step 1, on every BN layer (docs/differences.md item 20)."""
    if step == 0:
        set_bn_momentum(model, momentum=1.0)
    elif step == 1:
        set_bn_momentum(model, momentum=0.01)


class EMA:
    """The averaged model: `before_step` and `update` around each optimiser step, `update_bn` at each epoch's end."""

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
        """After a resume: the BatchNorm momentum the trick left."""
        if global_step >= 1:
            bn_momentum_trick(model, 1)

    def state_dict(self):
        return self.wa_model.state_dict()

    def load_state_dict(self, state):
        load_state_dict(self.wa_model, state)

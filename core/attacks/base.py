"""Base class of the attacks: label handling and the model-state guard."""
from contextlib import ExitStack

import torch
import torch.nn as nn

from core.utils.context import ctx_noparamgrad_and_eval

from .utils import replicate_input


class Attack:
    """Base class: `attack(x, y) -> x_adv`.

    Every attack runs with the model in eval mode (BatchNorm uses its running statistics and does not
    update them) and with no parameter requiring grad, exactly as the reference's trainer calls it
    (inside `ctx_noparamgrad_and_eval`). On exit, also when the attack raises, every submodule's
    `training` flag and every parameter's `requires_grad` are restored as found. Gradients are taken with
    respect to the input only (`torch.autograd.grad`), so no parameter's `.grad` is touched, and they are
    enabled even when the caller runs under `torch.no_grad()`.

    Arguments:
        model (nn.Module or callable): maps images (B, C, H, W) in [clip_min, clip_max] to logits (B, K).
        loss_fn (callable or None): loss(logits, labels) -> scalar tensor.
        clip_min (float): lower bound of the image box. Default: 0.
        clip_max (float): upper bound of the image box. Default: 1.
        targeted (bool): minimise the loss of the given labels instead of maximising it. Default: False.
    """

    def __init__(self, model, loss_fn=None, clip_min=0., clip_max=1., targeted=False):
        self.model = model
        self.loss_fn = loss_fn
        self.clip_min = clip_min
        self.clip_max = clip_max
        self.targeted = targeted

    def _context(self):
        """Eval mode, frozen parameters, gradients enabled; everything restored on exit."""
        stack = ExitStack()
        if isinstance(self.model, nn.Module):
            stack.enter_context(ctx_noparamgrad_and_eval(self.model))
        stack.enter_context(torch.enable_grad())
        return stack

    def _get_predicted_label(self, x):
        """argmax of the model's logits under no_grad, shape (B,)."""
        with torch.no_grad():
            return self.model(x).argmax(dim=1)

    def _verify_and_process_inputs(self, x, y):
        """Detached copies of x and y; y = the model's prediction when None (untargeted only)."""
        if self.targeted and y is None:
            raise ValueError('a targeted attack needs the target labels y.')
        x = replicate_input(x)
        y = self._get_predicted_label(x) if y is None else replicate_input(y)
        return x, y

    def _objective(self, y):
        """logits -> the loss of y to ascend (descend if targeted)."""
        sign = -1 if self.targeted else 1
        return lambda logits: sign * self.loss_fn(logits, y)

    def _perturb(self, x, y):
        """The attack proper: x (B, C, H, W), y (B,) -> x_adv (B, C, H, W); called inside the guard."""
        raise NotImplementedError('Sub-classes must implement _perturb.')

    def __call__(self, x, y=None):
        """x (B, C, H, W) in [clip_min, clip_max], y (B,) int64 or None (the model's predictions) -> x_adv, detached."""
        with self._context():
            x, y = self._verify_and_process_inputs(x, y)
            return self._perturb(x, y).detach()

    def __repr__(self):
        skip = ('model', 'loss_fn')
        args = ', '.join(f'{k}={v}' for k, v in vars(self).items() if k not in skip and not k.startswith('_'))
        return f'{type(self).__name__}({args})'

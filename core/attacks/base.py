"""Base class of the attacks: labels and the model-state guard."""
from contextlib import ExitStack

import torch
import torch.nn as nn

from core.utils.context import ctx_noparamgrad_and_eval


class Attack:
    """`attack(x, y) -> x_adv` (y None: the predictions; loss_fn None: summed CE), in eval mode, frozen parameters."""

    def __init__(self, model, loss_fn=None):
        self.model = model
        self.loss_fn = nn.CrossEntropyLoss(reduction='sum') if loss_fn is None else loss_fn

    def _objective(self, y):
        return lambda logits: self.loss_fn(logits, y)

    def _perturb(self, x, y):
        raise NotImplementedError('Sub-classes must implement _perturb.')

    def __call__(self, x, y=None):
        with ExitStack() as stack:
            if isinstance(self.model, nn.Module):
                stack.enter_context(ctx_noparamgrad_and_eval(self.model))
            stack.enter_context(torch.enable_grad())
            x = x.detach().clone()
            if y is None:
                with torch.no_grad():
                    y = self.model(x).argmax(dim=1)
            return self._perturb(x, y.detach().clone()).detach()

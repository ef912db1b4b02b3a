"""One-step attacks: FGSM (L-inf) and FGM (L2)."""
import torch

from .base import Attack
from .utils import ascend, normalize_by_pnorm


class FGSMAttack(Attack):
    """FGSM (Goodfellow et al., ICLR 2015): x_adv = clamp01(x + eps sign(grad_x loss_fn(model(x), y)))."""

    _direction = staticmethod(torch.sign)

    def __init__(self, model, loss_fn=None, eps=0.3):
        super().__init__(model, loss_fn)
        self.eps = eps

    def _perturb(self, x, y):
        def update(x, grad):
            return torch.clamp(x + self.eps * self._direction(grad), 0., 1.)
        return ascend(self.model, self._objective(y), x, x, update, 1, delta=False)


class FGMAttack(FGSMAttack):
    """FGSM in L2: x + eps g / max(||g||_2, 1e-6), clamped (NameError in the reference, docs/differences.md item 4)."""

    _direction = staticmethod(normalize_by_pnorm)

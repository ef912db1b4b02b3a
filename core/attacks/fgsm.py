"""One-step attacks: FGSM (L-inf) and FGM (L2)."""
import torch
import torch.nn as nn

from .base import Attack
from .utils import ascend, clamp, normalize_by_pnorm


class FGSMAttack(Attack):
    r"""Fast gradient sign method.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.

    Threat model: ||x_adv - x||_inf <= eps, x_adv in [clip_min, clip_max].
    x_adv = clamp(x + eps * sign(grad_x loss(model(x), y)), clip_min, clip_max); no random start.

    Arguments:
        model (nn.Module): images (B, C, H, W) -> logits (B, K).
        loss_fn (callable): loss(logits, y) -> scalar. Default: None = CrossEntropyLoss(reduction='sum').
        eps (float): step size = radius of the ball. Default: 0.3.
        clip_min (float): lower image bound. Default: 0.
        clip_max (float): upper image bound. Default: 1.
        targeted (bool): step down the loss of y instead. Default: False.

    Shapes: x (B, C, H, W), y (B,) int64 -> x_adv (B, C, H, W).
    """

    def __init__(self, model, loss_fn=None, eps=0.3, clip_min=0., clip_max=1., targeted=False):
        super().__init__(model, loss_fn, clip_min, clip_max, targeted)
        self.eps = eps
        if self.loss_fn is None:
            self.loss_fn = nn.CrossEntropyLoss(reduction='sum')

    _direction = staticmethod(torch.sign)

    def _perturb(self, x, y):
        def update(x, grad):
            return clamp(x + self.eps * self._direction(grad), self.clip_min, self.clip_max)
        return ascend(self.model, self._objective(y), x, x, update, 1, delta=False)


class FGMAttack(FGSMAttack):
    r"""Fast gradient method, L2 version of FGSM.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015; Miyato et al., 2017.

    Threat model: ||x_adv - x||_2 <= eps, x_adv in [clip_min, clip_max].
    x_adv = clamp(x + eps * g / max(||g||_2, 1e-6), clip_min, clip_max), g = grad_x loss, per sample.
    (The reference raises NameError here: its normalisation helper is not imported. This is the formula;
    docs/differences.md item 4.)

    Arguments: as `FGSMAttack`.
    Shapes: x (B, C, H, W), y (B,) int64 -> x_adv (B, C, H, W).
    """

    _direction = staticmethod(normalize_by_pnorm)

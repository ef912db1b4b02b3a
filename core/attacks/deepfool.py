"""DeepFool, L-inf and L2. Minimal-perturbation attack: NOT bounded by any eps."""
import math

import torch

from .base import Attack
from .utils import is_linf


class DeepFoolAttack(Attack):
    r"""DeepFool: step to the linearised closest decision boundary until the prediction changes.

    Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep neural networks", CVPR 2016.

    Threat model: none (minimal perturbation, no eps ball); x_adv in [clip_min, clip_max].
    Labels passed in are ignored: y = the model's prediction on x. Each iteration, for the samples still
    predicted as y: with o = current argmax, for every other class k (in ascending-logit order)
    w_k = grad z_k - grad z_o, f_k = z_k - z_o, pert_k = |f_k| / ||w_k||_q (q = 2 for L2, q = 1 for L-inf);
    keep the smallest; r = (pert + 1e-6) * w / ||w||_2 (L2) or (pert + 1e-6) * sign(w) (L-inf);
    r_tot += r; x = clamp(x_orig + (1 + overshoot) * r_tot, clip_min, clip_max).
    Samples already misclassified get r = 0 (the reference multiplies r by 0, which is NaN when r is inf).

    Arguments:
        model (nn.Module): images (B, C, H, W) -> logits (B, K).
        overshoot (float): final scaling 1 + overshoot of the accumulated step. Default: 0.02.
        nb_iter (int): maximal number of iterations. Default: 50.
        search_iter (int): binary-search steps on the scale of x_adv - x towards the smallest one that
            still changes the prediction (0 = none, what `create_attack` uses). Default: 50.
        clip_min (float): lower image bound. Default: 0.
        clip_max (float): upper image bound. Default: 1.
        ord (float): math.inf or 2. Default: math.inf.

    Shapes: x (B, C, H, W) -> x_adv (B, C, H, W). K backward passes per iteration.
    """

    def __init__(self, model, overshoot=0.02, nb_iter=50, search_iter=50, clip_min=0., clip_max=1., ord=math.inf):
        super().__init__(model, None, clip_min, clip_max, targeted=False)
        if not (is_linf(ord) or ord == 2):
            raise NotImplementedError('Only ord=inf and ord=2 have been implemented.')
        self.overshoot = overshoot
        self.nb_iter = nb_iter
        self.search_iter = search_iter
        self.ord = ord

    def _verify_and_process_inputs(self, x, y):
        return super()._verify_and_process_inputs(x, None)  # DeepFool attacks the model's own predictions

    def _perturb(self, x_orig, y):
        q = 1 if is_linf(self.ord) else 2  # dual norm of the threat model's norm
        view = (-1,) + (1,) * (x_orig.dim() - 1)
        batch_i = torch.arange(x_orig.shape[0], device=x_orig.device)
        x, r_tot = x_orig.clone(), torch.zeros_like(x_orig)
        for _ in range(self.nb_iter):
            x.requires_grad_(True)
            logits = self.model(x)
            order = logits.detach().argsort(dim=1)
            inds_orig, inds_other = order[:, -1], order[:, :-1]
            not_done = inds_orig == y
            if not not_done.any():
                break
            grad_orig, = torch.autograd.grad(logits[batch_i, inds_orig].sum(), x, retain_graph=True)
            pert = x_orig.new_full((x_orig.shape[0],), math.inf)
            w = torch.zeros_like(x_orig)
            for inds in inds_other.T:
                w_k = torch.autograd.grad(logits[batch_i, inds].sum(), x, retain_graph=True)[0] - grad_orig
                f_k = (logits[batch_i, inds] - logits[batch_i, inds_orig]).detach()
                pert_k = torch.abs(f_k) / torch.norm(w_k.flatten(1), q, -1)
                swi = pert_k < pert
                pert[swi], w[swi] = pert_k[swi], w_k[swi]
            if q == 2:
                r_i = (pert + 1e-6).view(view) * w / torch.norm(w.flatten(1), 2, -1).view(view)
            else:
                r_i = (pert + 1e-6).view(view) * w.sign()
            r_tot = r_tot + torch.where(not_done.view(view), r_i, torch.zeros_like(r_i))
            x = torch.clamp(x_orig + (1. + self.overshoot) * r_tot, self.clip_min, self.clip_max)
        return self._search(x_orig, x.detach(), y)

    def _search(self, x_orig, x, y):
        """Binary search of the smallest scale l in (0, 1] such that x_orig + l (x - x_orig) is misclassified."""
        if self.search_iter <= 0:
            return x
        dx = x - x_orig
        low, high = dx.new_zeros(dx.shape[0]), dx.new_ones(dx.shape[0])
        view = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(self.search_iter):
            mid = (low + high) / 2.
            with torch.no_grad():
                stay = self.model(x_orig + mid.view(view) * dx).argmax(dim=1) == y
            low, high = torch.where(stay, mid, low), torch.where(stay, high, mid)
        return x_orig + high.view(view) * dx


class LinfDeepFoolAttack(DeepFoolAttack):
    """DeepFool with L-inf geometry (see `DeepFoolAttack`; ord = inf). Same arguments except `ord`."""

    def __init__(self, model, overshoot=0.02, nb_iter=50, search_iter=50, clip_min=0., clip_max=1.):
        super().__init__(model, overshoot, nb_iter, search_iter, clip_min, clip_max, ord=math.inf)


class L2DeepFoolAttack(DeepFoolAttack):
    """DeepFool with L2 geometry (see `DeepFoolAttack`; ord = 2). Same arguments except `ord`."""

    def __init__(self, model, overshoot=0.02, nb_iter=50, search_iter=50, clip_min=0., clip_max=1.):
        super().__init__(model, overshoot, nb_iter, search_iter, clip_min, clip_max, ord=2)

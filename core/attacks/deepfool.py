"""DeepFool, L-inf and L2: a minimal-perturbation attack, NOT bounded by any eps."""
import functools
import math

import torch

from .base import Attack


class DeepFoolAttack(Attack):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016) on the model's own predictions; misclassified samples stop."""

    def __init__(self, model, overshoot=0.02, nb_iter=50, ord=math.inf):
        super().__init__(model)
        self.overshoot, self.nb_iter, self.ord = overshoot, nb_iter, ord

    def __call__(self, x, y=None):
        return super().__call__(x, None)

    def _perturb(self, x_orig, y):
        q = 1 if self.ord == math.inf else 2  # dual norm of the threat model's norm
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
            x = torch.clamp(x_orig + (1. + self.overshoot) * r_tot, 0., 1.)
        return x.detach()


class LinfDeepFoolAttack(DeepFoolAttack):
    __init__ = functools.partialmethod(DeepFoolAttack.__init__, ord=math.inf)


class L2DeepFoolAttack(DeepFoolAttack):
    __init__ = functools.partialmethod(DeepFoolAttack.__init__, ord=2)

"""The without_DDPM attacks, `linf` or `l2`: starts on x's device (docs/differences.md items 65 and 71)."""
import torch
import torch.nn.functional as F

from core.losses.divergences import cw_margin, distance
from core.utils.context import ctx_eval, ctx_noparamgrad

from .utils import ascend

NORMS = ('linf', 'l2')


def _clamp_to_image(delta, x):
    return torch.max(torch.min(delta, 1 - x), -x)


def _random_start(x, eps, norm):
    delta = torch.zeros_like(x)
    if norm == 'linf':
        delta.uniform_(-eps, eps)
    else:
        delta.normal_()
        n = delta.view(delta.size(0), -1).norm(p=2, dim=1).view(-1, 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        delta *= r / n * eps
    return _clamp_to_image(delta, x)


# the original's order: step and clamp delta, then into [0, 1] (PGDAttack clamps x + delta: other rounding)
def _linf_step(x, eps, step):
    def update(delta, grad):
        return _clamp_to_image(torch.clamp(delta + step * torch.sign(grad), min=-eps, max=eps), x)
    return update


def _l2_step(x, eps, step):
    def update(delta, grad):
        g_norm = torch.norm(grad.view(grad.shape[0], -1), dim=1).view(-1, 1, 1, 1)
        delta = (delta + grad / (g_norm + 1e-10) * step).view(delta.size(0), -1).renorm(
            p=2, dim=0, maxnorm=eps).view_as(delta)
        return _clamp_to_image(delta, x)
    return update


class _Attack:
    def __init__(self, model, eps, step, iters, restarts=1, norm='linf'):
        if norm not in NORMS:
            raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')
        self.model, self.eps, self.step, self.iters = model, eps, step, iters
        self.restarts, self.norm = restarts, norm

    def _ascend(self, loss_of_logits, x, delta):
        update = (_linf_step if self.norm == 'linf' else _l2_step)(x, self.eps, self.step)
        return ascend(self.model, loss_of_logits, x, delta, update, self.iters)


class DivergencePGD(_Attack):
    """PGD on mean_i D(p(x + delta)_i, e_y,i) in the model's mode, the last restart (docs/differences.md 58, 61)."""

    def __init__(self, model, eps, step, iters, restarts=1, norm='linf', div='KL', num_classes=10):
        super().__init__(model, eps, step, iters, restarts, norm)
        self.div, self.num_classes = div, num_classes

    def __call__(self, x, y):
        x = x.detach()
        target = F.one_hot(y, self.num_classes).float()

        def objective(logits):
            return distance(F.softmax(logits, dim=1), target, self.div).mean()

        with ctx_noparamgrad(self.model):
            for _ in range(self.restarts):
                delta = self._ascend(objective, x, _random_start(x, self.eps, self.norm))
        return torch.clamp(x + delta, 0, 1)


class TradesDivergencePGD(_Attack):
    """TRADES's inner max of mean_i D(p(x + delta)_i, p(x)_i), eval mode, L-inf (docs/differences.md item 58)."""

    def __init__(self, model, eps, step, iters, div='KL'):
        super().__init__(model, eps, step, iters, 1, 'linf')
        self.div = div

    def __call__(self, x, y=None):
        x = x.detach()
        with ctx_eval(self.model), ctx_noparamgrad(self.model):
            with torch.no_grad():
                clean = F.softmax(self.model(x), dim=1)

            def objective(logits):
                return distance(F.softmax(logits, dim=1), clean, self.div).mean()

            delta = _clamp_to_image(0.001 * torch.randn(x.shape, device=x.device), x)
            delta = self._ascend(objective, x, delta)
        return torch.clamp(x + delta, 0, 1)


class CEPGD(_Attack):
    """Eval PGD (Rice et al., ICML 2020), CE or CW: per sample the highest-CE restart (docs/differences.md item 61)."""

    def __init__(self, model, eps, step, iters, restarts=1, norm='linf', loss='ce'):
        super().__init__(model, eps, step, iters, restarts, norm)
        if loss not in ('ce', 'cw'):
            raise ValueError(f"unknown loss {loss!r}; use 'ce' or 'cw'")
        self.loss = loss

    def __call__(self, x, y):
        x = x.detach()
        step_loss = F.cross_entropy if self.loss == 'ce' else cw_margin  # mean, unclamped (docs/differences.md item 66)
        best_loss = torch.zeros(y.shape[0], device=x.device)
        best_delta = torch.zeros_like(x)
        with ctx_noparamgrad(self.model):
            for _ in range(self.restarts):
                delta = self._ascend(lambda z: step_loss(z, y), x, _random_start(x, self.eps, self.norm))
                with torch.no_grad():
                    all_loss = F.cross_entropy(self.model(x + delta), y, reduction='none')
                keep = all_loss >= best_loss
                best_delta[keep] = delta[keep]
                best_loss = torch.max(best_loss, all_loss)
        return torch.clamp(x + best_delta, 0, 1)

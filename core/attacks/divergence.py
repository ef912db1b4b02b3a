"""The attacks of the without_DDPM experiments: `attack(x, y) -> x_adv`, images in [0, 1], NCHW.

- `DivergencePGD`: PGD (Madry et al., ICLR 2018) maximising mean_i D(p(x + delta)_i, e_y,i) for a distance D of
  core.losses.divergences; the PGD-AT training attack and the per-epoch "new divergence" test attack.
  **It keeps the model's mode**: during training the model is in train mode, so each of the R*T forwards uses
  batch statistics and updates the BatchNorm running statistics (as the original, docs/differences.md item 58).
  Returns the last restart (docs/differences.md item 61).
- `TradesDivergencePGD`: the TRADES inner maximisation (Zhang et al., ICML 2019) with a distance D:
  maximise mean_i D(p(x + delta)_i, p(x)_i) in eval mode from delta = 0.001 N(0, 1) (docs/differences.md item
  58). L-inf only.
- `CEPGD`: evaluation PGD (Rice et al., "Overfitting in adversarially robust deep learning", ICML 2020) on the
  mean cross-entropy or the CW margin; keeps, per sample, the restart with the highest cross-entropy, also for
  the CW margin (docs/differences.md item 61).

Threat models: `linf` (box of radius eps) or `l2` (ball of radius eps); x_adv is always in [0, 1]. The random
starts are drawn from the generator of x's device (torch's CPU generator on the CPU, the CUDA one on a GPU;
docs/differences.md item 65). Gradients are taken with respect to the perturbation only: no parameter `.grad`
is written (the original accumulated parameter gradients during attacks and cleared them later; the numbers are
the same; docs/differences.md item 71).
"""
import torch
import torch.nn.functional as F

from core.losses.divergences import cw_margin, distance
from core.utils.context import ctx_eval, ctx_noparamgrad

from .utils import ascend

__all__ = ['CEPGD', 'DivergencePGD', 'NORMS', 'TradesDivergencePGD']

NORMS = ('linf', 'l2')


def _clamp_to_image(delta, x):
    """delta such that x + delta lies in [0, 1] (elementwise min/max with -x and 1 - x)."""
    return torch.max(torch.min(delta, 1 - x), -x)


def _random_start(x, eps, norm):
    """linf: U(-eps, eps); l2: N(0, I) rescaled per sample to a radius u * eps, u ~ U(0, 1). Then kept in [0, 1]."""
    delta = torch.zeros_like(x)
    if norm == 'linf':
        delta.uniform_(-eps, eps)
    else:
        delta.normal_()
        n = delta.view(delta.size(0), -1).norm(p=2, dim=1).view(-1, 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        delta *= r / n * eps
    return _clamp_to_image(delta, x)


def _linf_step(x, eps, step):
    """delta + step sign(grad), clamped to [-eps, eps] (delta space), then into [0, 1] around x."""
    def update(delta, grad):
        return _clamp_to_image(torch.clamp(delta + step * torch.sign(grad), min=-eps, max=eps), x)
    return update


def _l2_step(x, eps, step):
    """delta + step grad / (||grad|| + 1e-10), renormed to eps, then into [0, 1] around x."""
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

    def __repr__(self):
        return (f'{type(self).__name__}(eps={self.eps:.5f}, alpha={self.step:.5f}, iters={self.iters}, '
                f'restarts={self.restarts}, norm={self.norm})')


class DivergencePGD(_Attack):
    """PGD on mean_i D(p(model(x + delta))_i, e_y,i), in the model's current mode; returns the last restart.

    Args:
        model: (N, 3, H, W) in [0, 1] -> logits (N, K). eps, step: radius and step size (e.g. 8/255, 2/255).
        iters: T. restarts: R (each restart starts afresh; the last one is returned). norm: 'linf' or 'l2'.
        div: a distance of core.losses.divergences. num_classes: K.
    Call: attack(x, y) with x (B, C, H, W) in [0, 1], y (B,) int64 -> x_adv = clamp01(x + delta), detached.
    """

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
    """TRADES's inner maximisation of mean_i D(p(model(x + delta))_i, c_i), c = p(model(x)), in eval mode.

    delta starts at 0.001 N(0, 1) (no eps projection at the start); each step is a sign step, the eps-box and
    [0, 1]. The model's modes are restored afterwards.

    Args:
        model, eps, step, iters: as DivergencePGD. div: a distance of core.losses.divergences. L-inf only; y is unused.
    Call: attack(x, y) -> x_adv = clamp01(x + delta), detached.
    """

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
    """Evaluation PGD on the batch-mean cross-entropy (`loss='ce'`) or CW margin (`loss='cw'`), R restarts.

    After each restart, the per-sample CE at its final delta is computed; a sample keeps that restart's delta if
    its CE is >= the best so far (starting at 0). The model's mode is kept (the scripts call it in eval mode).
    Call: attack(x, y) -> x_adv = clamp01(x + delta), detached.
    """

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

"""The default strategy of generate_toy_demo.py: `FastPath`, the toy network's forward and backward by hand, in
cache-sized blocks.

generate_toy_demo.py states the paper's algorithm with plain autograd; every function of it that evaluates the
network or a posterior takes a strategy `ops` with four methods, `softmax(z)`, `ground_truth(x)`, `predict(model,
x)` and `input_grad(model, x, target, div)`. `--plain-autograd` passes the script's own `PlainAutograd`; by default
it passes a `FastPath`, which computes the same quantities faster on the CPU (bench/toy.py times both):

- `softmax2(z)`: softmax over a contiguous class axis (PyTorch's last-dim softmax kernel is slow for 2 classes);
  equal to F.softmax(z, dim=1) up to one float32 ulp.
- `ToyLogits`: an autograd Function that evaluates the network in blocks of rows and recomputes each block's
  hidden layers in the backward, so the activations stay in the cache.
- `FastPath.input_grad`: the attacks' per-row input gradient, with the network's dz/dx taken in forward mode (one
  extra matrix product per block) and autograd only for the cheap (N, 2) part after the logits; no parameter
  gradients.

All of it is written for `build_model()`'s Linear(1, H) -> Tanh -> Linear(H, H) -> Tanh -> Linear(H, K) network
and refuses any other (`check_toy_model`). tests/test_toy_demo.py checks it against plain autograd in float64.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

CPU_CHUNK = 2048               # points per block on the CPU (the hidden activations of a block stay in L2)


def softmax2(z):
    """F.softmax(z, dim=1) for (N, K) logits with few classes, computed along a contiguous class axis.

    The same formula (max, exp, sum, divide) and equal to F.softmax(z, 1) up to one float32 ulp, but faster on
    the CPU for K = 2, where PyTorch's last-dim softmax kernel is slow. Returns an (N, K) view of (K, N) storage.
    """
    return F.softmax(z.t().contiguous(), dim=0).t()


def check_toy_model(model):
    """The fast path (`_logits`, `ToyLogits`, `FastPath`) is written for `build_model()`'s layout only."""
    kinds = (nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear)
    if not (isinstance(model, nn.Sequential) and len(model) == 5
            and all(isinstance(m, k) for m, k in zip(model, kinds)) and model[0].in_features == 1):
        raise TypeError('the toy attacks need build_model()\'s Linear(1,H)-Tanh-Linear(H,H)-Tanh-Linear(H,K) network.')


# The fast path. Every row's logits depend on its own x only, so the network is evaluated in blocks of rows
# small enough for the hidden activations to stay in the cache (on the CPU), without autograd, through buffers
# allocated once per call. Activations are stored feature-major, (H, rows): the H x H products, the only real
# work, are ~13% faster that way in MKL, and the logits come out class-major, the layout `softmax2` wants.

def _blocks(n, chunk):
    """(start, size) of consecutive row blocks of at most `chunk` rows (None = one block)."""
    step = min(chunk or n, n)
    return [(s, min(step, n - s)) for s in range(0, n, step)]


def _buffer(rows, cols, like):
    """A function giving contiguous (rows, c) views, c <= cols, of one buffer allocated now (like `like`)."""
    buf = torch.empty(rows * cols, dtype=like.dtype, device=like.device)
    return lambda c: buf[:rows * c].view(rows, c)


def _hidden(xb, w1, b1, w2, b2, a1, a2, slope):
    """The two tanh layers on a block of b points xb (1, b), written feature-major into the buffers a1, a2.

    Without slope, a1 and a2 are (H, b) and receive h1 = tanh(w1 x + b1) and h2 = tanh(W2 h1 + b2). With slope
    they are (H, 2b): columns :b as before, columns b: the forward-mode derivatives dh1/dx = (1 - h1^2) w1 and
    dh2/dx = (1 - h2^2) W2 dh1/dx, so that one matrix product maps both halves through W2. w1, b1, b2 are (H, 1).
    Returns the (H, b) views h1, h2.
    """
    b = xb.shape[1]
    h1, dh1 = a1[:, :b], a1[:, b:]
    torch.mul(w1, xb, out=h1).add_(b1).tanh_()      # w1 x + b1 (addcmul is slow on this broadcast, addmm copies)
    if slope:
        torch.ops.aten.tanh_backward.grad_input(w1.expand(-1, b), h1, grad_input=dh1)
    torch.mm(w2, a1, out=a2)
    h2, dh2 = a2[:, :b], a2[:, b:]
    h2.add_(b2).tanh_()
    if slope:
        torch.ops.aten.tanh_backward.grad_input(dh2, h2, grad_input=dh2)
    return h1, h2


def _logits(x, chunk, w1, b1, w2, b2, w3, b3, slope=False):
    """z = W3 h2 + b3 for every point, and with slope also dz/dx = W3 dh2/dx (see `_hidden`); (N, K) each.

    x is (N, 1), the parameters are the Linear layers' (w1 is (H, 1)). z and dz/dx are built as (K, N) matrices
    and returned as (N, K) views (dz is None without slope).
    """
    n, hidden, k, m = x.shape[0], w2.shape[0], w3.shape[0], 2 if slope else 1
    step = min(chunk or n, n)
    a1, a2, out = (_buffer(r, m * step, x) for r in (hidden, hidden, k))
    z = x.new_empty(k, n)
    dz = x.new_empty(k, n) if slope else None
    b1, b2 = b1[:, None], b2[:, None]
    for s, b in _blocks(n, chunk):
        _, h2 = _hidden(x[s:s + b].t(), w1, b1, w2, b2, a1(m * b), a2(m * b), slope)
        o = torch.mm(w3, a2(m * b), out=out(m * b))
        torch.add(o[:, :b], b3[:, None], out=z[:, s:s + b])
        if slope:
            dz[:, s:s + b] = o[:, b:]
    return z.t(), None if dz is None else dz.t()


class ToyLogits(torch.autograd.Function):
    """model(x) for `build_model()`'s network, in blocks of points: apply(x, chunk, *model.parameters()) -> (N, K).

    The backward recomputes each block's hidden layers instead of keeping two (H, N) activations (one more
    matrix product per block, but everything stays in the cache) and accumulates the parameter gradients
    block by block: dW3 = sum_i gz_i h2_i^T, g2 = (1 - h2^2) W3^T gz, dW2 = sum_i g2_i h1_i^T,
    g1 = (1 - h1^2) W2^T g2, dW1 = sum_i g1_i x_i, the biases' the sums of gz, g2, g1, and dx = W1^T g1.
    """

    @staticmethod
    def forward(ctx, x, chunk, *params):
        ctx.save_for_backward(x, *params)
        ctx.chunk = chunk
        return _logits(x, chunk, *params)[0]

    @staticmethod
    def backward(ctx, gz):
        x, w1, b1, w2, b2, w3, b3 = ctx.saved_tensors
        grads = [torch.zeros_like(p) for p in (w1, b1, w2, b2, w3, b3)]
        gw1, gb1, gw2, gb2, gw3, gb3 = grads
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        a1, a2, g = (_buffer(w2.shape[0], min(ctx.chunk or x.shape[0], x.shape[0]), x) for _ in range(3))
        for s, b in _blocks(x.shape[0], ctx.chunk):
            xb, gzb = x[s:s + b].t(), gz[s:s + b].t()             # (1, b), (K, b)
            h1, h2 = _hidden(xb, w1, b1[:, None], w2, b2[:, None], a1(b), a2(b), slope=False)
            gw3.addmm_(gzb, h2.t())
            gb3.add_(gzb.sum(1))
            g2 = torch.mm(w3.t(), gzb, out=g(b))
            torch.ops.aten.tanh_backward.grad_input(g2, h2, grad_input=g2)
            gw2.addmm_(g2, h1.t())
            gb2.add_(g2.sum(1))
            g1 = torch.mm(w2.t(), g2, out=h2)                      # h2 is no longer needed
            torch.ops.aten.tanh_backward.grad_input(g1, h1, grad_input=g1)
            gw1.addmm_(g1, xb.t())
            gb1.add_(g1.sum(1))
            if gx is not None:
                torch.mm(g1.t(), w1, out=gx[s:s + b])
        return (gx, None, *grads)


class FastPath:
    """How generate_toy_demo.py computes by default: its `PlainAutograd` strategy's four methods, the same
    quantities computed faster on the CPU.

    Arguments:
        bayes_logits (callable): (N, 1) points -> (N, K) logits of the ground truth, differentiable in the points
            (generate_toy_demo.py's `bayes_logits`).
        divergence (callable): (o, t, div) -> (N,) per-row divergence of two (N, K) probability tensors
            (generate_toy_demo.py's `divergence_per_sample`).
        device (torch.device or str): the run's device; on the CPU the network runs in blocks of CPU_CHUNK rows,
            elsewhere in one block (the module itself under autograd).
        chunk (int or None): overrides the rows per block (None = all rows at once).

    - `softmax(z)`: `softmax2`, F.softmax(z, dim=1) computed along a contiguous class axis.
    - `ground_truth(x)`: softmax(bayes_logits(x)), P(Y|x).
    - `predict(model, x)`: softmax(model(x)), p(x), through `ToyLogits` in blocks of `chunk` rows.
    - `input_grad(model, x, target, div)`: the attacks' per-row input gradient, with the network's dz/dx in
      forward mode and autograd only for the cheap (N, K) part after the logits; no parameter gradients.
    """

    def __init__(self, bayes_logits, divergence, device='cpu', chunk='auto'):
        self.bayes_logits, self.divergence = bayes_logits, divergence
        self.chunk = (CPU_CHUNK if torch.device(device).type == 'cpu' else None) if chunk == 'auto' else chunk

    @staticmethod
    def softmax(z):
        return softmax2(z)

    def ground_truth(self, x):
        return softmax2(self.bayes_logits(x))

    def predict(self, model, x):
        if self.chunk is None:
            return softmax2(model(x))
        check_toy_model(model)
        return softmax2(ToyLogits.apply(x, self.chunk, *model.parameters()))

    def input_grad(self, model, x, target, div):
        """d/dx_i of divergence(p(x)_i, target_i) for every row i, (N, 1).

        model: `build_model()`'s network, or None to differentiate divergence(P(Y|x)_i, target_i) (the C-constant
        attack); x: (N, 1) points; target: (N, K) constant, or None for the ground truth at the same point, P(Y|x),
        through which the gradient also flows (the SCORE attack). generate_toy_demo.py's plain-autograd gradient
        of the batch-mean distance is this per-row one times a positive factor (1/N, and 1 / (2 sqrt(mean)) for
        JSsqrt): the same signs, hence the same attack steps.

        The chain rule is split at the logits: autograd differentiates divergence(softmax(z), target), and
        `_logits` gives dz/dx in forward mode, so the gradient is sum_k dL/dz_k * dz_k/dx (+ dL/dtarget *
        dtarget/dx for the SCORE attack). The (N, K) probabilities are views of class-major (K, N) storage, the
        layout in which autograd's gradients of `softmax2` then stay: no transposing copies.
        """
        with torch.enable_grad():
            xr = x.detach().requires_grad_(target is None or model is None)
            t = self.ground_truth(xr) if target is None else target
            if model is None:
                return torch.autograd.grad(self.divergence(self.ground_truth(xr), t, div).sum(), xr)[0]
            check_toy_model(model)
            with torch.no_grad():
                z, dz = _logits(x, self.chunk, *model.parameters(), slope=True)
            z.requires_grad_(True)
            loss = self.divergence(softmax2(z), t, div).sum()
            if target is None:
                gz, gx = torch.autograd.grad(loss, (z, xr))
            else:
                gz, gx = torch.autograd.grad(loss, z)[0], None
        g = (gz * dz).sum(1, keepdim=True)
        return g if gx is None else g + gx

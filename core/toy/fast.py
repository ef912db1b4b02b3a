"""generate_toy_demo.py's default `FastPath`: the toy net by hand in blocks (docs/benchmarks.md#toy-demo-benchtoypy)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CPU_CHUNK = 2048               # points per block on the CPU (the hidden activations of a block stay in L2)


def softmax2(z):
    """F.softmax(z, dim=1) within a float32 ulp, along a contiguous class axis (the last-dim kernel is slow for K=2)."""
    return F.softmax(z.t().contiguous(), dim=0).t()


def check_toy_model(model):
    kinds = (nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear)
    if not (isinstance(model, nn.Sequential) and len(model) == 5
            and all(isinstance(m, k) for m, k in zip(model, kinds)) and model[0].in_features == 1):
        raise TypeError('the toy attacks need build_model()\'s Linear(1,H)-Tanh-Linear(H,H)-Tanh-Linear(H,K) network.')


# Activations are feature-major (H, rows): MKL's H x H products are ~13% faster, the logits come out class-major.

def _blocks(n, chunk):
    step = min(chunk or n, n)
    return [(s, min(step, n - s)) for s in range(0, n, step)]


def _buffer(rows, cols, like):  # contiguous (rows, c) views, c <= cols, of one buffer allocated once
    buf = torch.empty(rows * cols, dtype=like.dtype, device=like.device)
    return lambda c: buf[:rows * c].view(rows, c)


def _hidden(xb, w1, b1, w2, b2, a1, a2, slope):
    """h1, h2 of xb (1, b) into a1, a2 (H, b); with slope (H, 2b), whose columns b: get dh1/dx and dh2/dx."""
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
    """(N, K) views of the (K, N) logits z and, with slope, dz/dx (else None), block by block."""
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
    """model(x) in blocks; the backward recomputes each block's hidden layers instead of storing (H, N) ones."""

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
    """PlainAutograd's methods, faster: CPU_CHUNK-row blocks on the CPU, else one; `chunk` overrides (None: one)."""

    def __init__(self, bayes_logits, divergence, device='cpu', chunk='auto'):
        self.bayes_logits, self.divergence = bayes_logits, divergence
        self.chunk = (CPU_CHUNK if torch.device(device).type == 'cpu' else None) if chunk == 'auto' else chunk

    softmax = staticmethod(softmax2)

    def ground_truth(self, x):
        return softmax2(self.bayes_logits(x))

    def predict(self, model, x):
        if self.chunk is None:
            return softmax2(model(x))
        check_toy_model(model)
        return softmax2(ToyLogits.apply(x, self.chunk, *model.parameters()))

    def input_grad(self, model, x, target, div):
        """d/dx_i of divergence(p(x)_i, target_i), (N, 1): PlainAutograd's over a positive factor (the same signs)."""
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

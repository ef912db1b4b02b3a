"""The paper's 1-D toy demo (SPEC section 11): why the standard robust error over-smooths and SCORE does not.

Pang, Lin, Yang, Zhu, Yan. "Robustness and Accuracy Could Be Reconcilable by (Proper) Definition", ICML 2022,
Figures 1 and 2. Two Gaussian classes on the real line, class 0 ~ N(-1, 2) (50000 samples per draw) and class 1 ~
N(1, 1) (10000 samples), so the ground-truth posterior P(Y|X) is known in closed form. A 1-100-100-2 tanh network
is trained to match it under an L-inf threat model of radius eps = 1 around each x, with

    PGDAT            min E[ max_delta D(p(x + delta), P(Y|x)) ]            (the standard robust error)
    PGDATconsistent  min E[ max_delta D(p(x + delta), P(Y|x + delta)) ]    (SCORE: the target moves with x)
    TRADES           min E[ D(p(x), P(Y|x)) + 1.0 * D(p(x + delta), P(Y|x)) ], delta from the TRADES attack
    Standard         min E[ D(p(x), P(Y|x)) ]

for a divergence D in {KL, JSsqrt, LSE, L2, L1, Linf}. Every iteration it prints the training loss, the
SCORE-style robust error R_SCORE and the standard error R_Standard (both measured with --divergence_C), and
at the end writes the learned posterior on 10000 test points to TOY_RESULTS/<demo>_<divergence>/.

    python generate_toy_demo.py --demo PGDAT --divergence KL
    python generate_toy_demo.py --demo PGDATconsistent --divergence KL
    python plot_toy_demo.py toy_results/PGDAT_KL toy_results/PGDATconsistent_KL

On the CPU it reproduces the reference's random stream, hence its printed numbers. On a GPU the perturbation
starts are drawn from the CUDA generator (the samples from the CPU one), as in the reference.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from core.errors import SEED_MAX, UserError, check_number, exit_on_user_error

DEMOS = ('PGDAT', 'PGDATconsistent', 'TRADES', 'Standard')
DIVERGENCES = ('KL', 'JSsqrt', 'LSE', 'L2', 'L1', 'Linf')

# Constants of the reference (SPEC section 11).
ITERATIONS = 500
HIDDEN = 100
LR = 1e-3
N0, N1 = 50000, 10000          # class-0 / class-1 samples per draw; also the class priors (5:1)
MU0, SIGMA0 = -1.0, 2.0
MU1, SIGMA1 = 1.0, 1.0
EPS = 1.0
ATTACK_ITERS = 10
ALPHA = EPS / 10
TRADES_BETA = 1.0
C_ROUNDS = 10
N_TEST = 10000
TEST_LOW, TEST_HIGH = -10.0, 10.0
SEED = 2
CPU_CHUNK = 2048               # points per block of the network's fast path on the CPU (activations stay in L2)


# ----------------------------------------------------------------------------------------------------------------
# The problem: data, ground truth, model, divergences
# ----------------------------------------------------------------------------------------------------------------

def softmax2(z):
    """F.softmax(z, dim=1) for (N, K) logits with few classes, computed along a contiguous class axis.

    The same formula (max, exp, sum, divide) and equal to F.softmax(z, 1) up to one float32 ulp, but ~10x
    faster on the CPU for K = 2, where PyTorch's last-dim softmax kernel is slow. Returns an (N, K) view.
    """
    return F.softmax(z.t().contiguous(), dim=0).t()


def ground_truth(x):
    """The Bayes posterior P(Y|X) of the two-Gaussian problem (the reference's `Softmax`).

    l_c = -(x - mu_c)^2 / (2 sigma_c^2) - log sigma_c + log n_c, c = 0, 1, with the reference's counts
    n0 = 50000, n1 = 10000 as priors (whatever --samples is); softmax over [l_0, l_1].

    Arguments:
        x (Tensor): (N, 1) points.
    Returns:
        (N, 2) probabilities; differentiable in x.
    """
    l0 = -(x - MU0) ** 2 / (2 * SIGMA0 ** 2) - np.log(SIGMA0) + np.log(N0)
    l1 = -(x - MU1) ** 2 / (2 * SIGMA1 ** 2) - np.log(SIGMA1) + np.log(N1)
    return softmax2(torch.cat([l0.t(), l1.t()]).t())      # (N, 2) logits stored class-major, as softmax2 wants


def split_samples(samples):
    """Total samples per draw -> (n0, n1) in the reference's 5:1 ratio (60000 -> 50000, 10000)."""
    n0 = int(round(samples * N0 / (N0 + N1)))
    return n0, samples - n0


def draw_samples(n0, n1, device):
    """One draw of training points: n0 from class 0 then n1 from class 1 (CPU generator), (n0 + n1, 1) on device.

    `Normal(mu, sigma).sample((n, 1))` as in the reference (on the CPU this is mu + sigma * randn).
    """
    x0 = torch.distributions.Normal(MU0, SIGMA0).sample((n0, 1))
    x1 = torch.distributions.Normal(MU1, SIGMA1).sample((n1, 1))
    return torch.cat([x0, x1], dim=0).to(device)


def draw_test_points(n=N_TEST, generator=None):
    """x_test ~ U(-10, 10), (n, 1), CPU. With `generator=None` this is the reference's draw from the global stream."""
    if generator is None:
        return torch.distributions.Uniform(TEST_LOW, TEST_HIGH).sample((n, 1))
    return torch.empty(n, 1).uniform_(TEST_LOW, TEST_HIGH, generator=generator)


def build_model(hidden=HIDDEN):
    """Linear(1, 100) -> Tanh -> Linear(100, 100) -> Tanh -> Linear(100, 2), PyTorch default init (on the CPU).

    The layers are built (and so initialised) in this order, which fixes the random stream.
    """
    return nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def divergence_per_sample(o, t, div, dim=1):
    """Per-row divergence between two probability rows (before the batch reduction of `distance`).

    KL: sum_k t (log t - log o) (= KL(t || o)); JSsqrt: the per-row JS divergence 0.5 (KL(o||M) + KL(t||M)),
    M = (o + t) / 2, without the sqrt; LSE: sum_k (o - t)^2; L2: ||o - t||_2; L1: ||o - t||_1; Linf: max_k |o - t|.

    Arguments:
        o, t (Tensor): (N, K) probability rows, or (K, N) columns with dim=0 (the same numbers; the attacks use
            it because autograd then keeps the class-major layout of `softmax2` and needs no transposing copies).
        dim (int): the class axis, default 1.
    Returns:
        (N,) tensor.
    """
    if div == 'KL':
        return F.kl_div(torch.log(o), t, reduction='none').sum(dim)
    if div == 'JSsqrt':
        log_m = torch.log((o + t) / 2)
        return 0.5 * (F.kl_div(log_m, o, reduction='none').sum(dim) + F.kl_div(log_m, t, reduction='none').sum(dim))
    if div == 'LSE':
        return ((o - t) ** 2).sum(dim)
    if div == 'L2':
        return torch.linalg.vector_norm(o - t, ord=2, dim=dim)
    if div == 'L1':
        return (o - t).abs().sum(dim)
    if div == 'Linf':
        return (o - t).abs().amax(dim)
    raise UserError(f'unknown divergence {div!r}: choose one of {", ".join(DIVERGENCES)}.')


def distance(o, t, div):
    """The reference's `distance(o, t, div)` (SPEC section 11): the batch mean of `divergence_per_sample`.

    Exception (reference quirk, kept): JSsqrt is the sqrt of the batch-mean JS divergence, not the mean of the
    per-row sqrt-JS.

    Arguments:
        o, t (Tensor): (N, K) probability rows (o: the model, t: the target).
        div (str): one of DIVERGENCES.
    Returns:
        a scalar tensor.
    """
    d = divergence_per_sample(o, t, div).mean()
    return torch.sqrt(d) if div == 'JSsqrt' else d


def predict(model, x, chunk=None):
    """p(model(x)): softmax probabilities, (N, 1) -> (N, 2).

    chunk=None evaluates the module itself (plain autograd); an int evaluates `build_model()`'s network in blocks
    of `chunk` rows with `ToyLogits` (the same math, a cache-friendly backward; the CPU path of `run`).
    """
    if chunk is None:
        return softmax2(model(x))
    _check_toy_model(model)
    return softmax2(ToyLogits.apply(x, chunk, *model.parameters()))


# ----------------------------------------------------------------------------------------------------------------
# Attacks: L-inf PGD on the 1-D input, 10 steps of 0.1 from a uniform start, delta clamped to [-1, 1]
# ----------------------------------------------------------------------------------------------------------------

def _check_toy_model(model):
    """`_logits` (the attacks' forward-mode gradient) and `ToyLogits` are written for `build_model()`'s layout only."""
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


def _input_grad(model, x, target, div, chunk):
    """d/dx_i of divergence_i(p(model(x)), target_i) for every row i, (N, 1).

    `target` is an (N, 2) tensor (a constant), or None for the ground truth at the same point, P(Y|x),
    through which the gradient also flows (the SCORE attack). The chain rule is split at the logits: autograd
    differentiates the cheap (N, K) part, divergence(softmax(z), target), and `_logits` gives dz/dx in forward mode,
    so the gradient is sum_k dL/dz_k * dz_k/dx (+ dL/dtarget * dtarget/dx for the SCORE attack). No parameter
    gradients are computed. The divergence is evaluated on (K, N) class-major views (the same numbers), in
    which layout autograd's gradients of `softmax2` and `ground_truth` then stay: no transposing copies.
    `model=None` differentiates divergence_i(P(Y|x), target_i) (the C-constant attack).
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(target is None or model is None)
        t = (ground_truth(xr) if target is None else target).t()               # class-major (K, N), see below
        if model is None:
            return torch.autograd.grad(divergence_per_sample(ground_truth(xr).t(), t, div, dim=0).sum(), xr)[0]
        with torch.no_grad():
            z, dz = _logits(x, chunk, *model.parameters(), slope=True)
        z.requires_grad_(True)
        loss = divergence_per_sample(softmax2(z).t(), t, div, dim=0).sum()
        if target is None:
            gz, gx = torch.autograd.grad(loss, (z, xr))
        else:
            gz, gx = torch.autograd.grad(loss, z)[0], None
    g = (gz * dz).sum(1, keepdim=True)
    return g if gx is None else g + gx


def pgd(model, x, target, div, eps=EPS, alpha=ALPHA, steps=ATTACK_ITERS, chunk=None):
    """Sign-gradient ascent on the per-row divergence, the reference's attack loop (SPEC section 11).

    Threat model: L-inf ball of radius eps around each scalar x, no clamp on x + delta. delta starts at
    U(-eps, eps) (drawn on x's device, `uniform_` on a zeros tensor) and takes `steps` steps of
    delta <- clamp(delta + alpha * sign(grad), -eps, eps).

    The reference ascends the batch-mean `distance`; its gradient is the per-row gradient times a positive
    factor (1/N, and 1 / (2 sqrt(mean)) for JSsqrt), so its sign, hence every step, is the same. Unlike the
    reference, no parameter gradients are accumulated (numerically irrelevant: it cleared them).

    Arguments:
        model (nn.Sequential or None): `build_model()`; None attacks the ground truth itself (the C constant).
        x (Tensor): (N, 1) clean points.
        target (Tensor or None): (N, 2) constant target, or None for the ground truth P(Y|x + delta).
        div (str): divergence to maximise.
        eps (float): radius, default 1. alpha (float): step, default 0.1. steps (int): default 10.
        chunk (int or None): rows per block, None = all rows at once.
    Returns:
        delta (Tensor): (N, 1), detached, |delta| <= eps.
    """
    if model is not None:
        _check_toy_model(model)
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    with torch.no_grad():
        for _ in range(steps):
            grad = _input_grad(model, x + delta, target, div, chunk)
            delta = torch.clamp(delta + alpha * grad.sign(), -eps, eps)
    return delta


def compute_C(x, div, chunk=None):
    """delta maximising distance(P(Y|x + delta), P(Y|x)): how far the ground truth itself moves in the ball."""
    return pgd(None, x, ground_truth(x).detach(), div, chunk=chunk)


def attack_pgd(model, x, y, div, chunk=None):
    """PGD-AT's attack: delta maximising distance(p(x + delta), y), y = P(Y|x) fixed."""
    return pgd(model, x, y, div, chunk=chunk)


def attack_pgd_consistent(model, x, div, chunk=None):
    """SCORE's attack: delta maximising distance(p(x + delta), P(Y|x + delta)); the target moves with delta."""
    return pgd(model, x, None, div, chunk=chunk)


def attack_trades(model, x, div, chunk=None):
    """TRADES' attack: delta maximising distance(p(x + delta), p(x)), p(x) detached."""
    with torch.no_grad():
        clean = predict(model, x, chunk)
    return pgd(model, x, clean, div, chunk=chunk)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------

def objective(model, demo, x, div, chunk=None):
    """The training loss of `demo` on the clean batch x (N, 1), as a scalar tensor with a graph to the model.

    TRADES: the robust term targets the ground truth, not the clean output (reference quirk, kept).
    """
    if demo == 'PGDAT':
        y = ground_truth(x)
        delta = attack_pgd(model, x, y, div, chunk)
        return distance(predict(model, x + delta, chunk), y, div)
    if demo == 'PGDATconsistent':
        delta = attack_pgd_consistent(model, x, div, chunk)
        return distance(predict(model, x + delta, chunk), ground_truth(x + delta), div)
    if demo == 'TRADES':
        y = ground_truth(x)
        delta = attack_trades(model, x, div, chunk)
        return (distance(predict(model, x, chunk), y, div)
                + TRADES_BETA * distance(predict(model, x + delta, chunk), y, div))
    if demo == 'Standard':
        return distance(predict(model, x, chunk), ground_truth(x), div)
    raise UserError(f'unknown demo {demo!r}: choose one of {", ".join(DEMOS)}.')


def robust_errors(model, x, div_c, chunk=None):
    """(R_SCORE, R_Standard) on x with divergence div_c, as floats.

    R_SCORE = distance(p(x + delta'), P(Y|x + delta')), delta' from the SCORE attack; R_Standard = distance(p(x),
    P(Y|x)).
    """
    delta = attack_pgd_consistent(model, x, div_c, chunk)
    with torch.no_grad():
        r_score = distance(predict(model, x + delta, chunk), ground_truth(x + delta), div_c).item()
        r_standard = distance(predict(model, x, chunk), ground_truth(x), div_c).item()
    return r_score, r_standard


def save_predictions(model, x_test, folder, suffix=''):
    """Write x_test.txt, y_test.txt (ground truth) and pre_test.txt (model) with numpy's savetxt defaults."""
    with torch.no_grad():
        x = x_test.to(next(model.parameters()).device)
        y_test, pre_test = ground_truth(x), predict(model, x)
    for name, a in (('x_test', x), ('y_test', y_test), ('pre_test', pre_test)):
        np.savetxt(os.path.join(folder, f'{name}{suffix}.txt'), a.cpu().numpy())


def iteration_lines(ite, train_loss, r_score, r_standard, compact=False):
    """The printout of iteration `ite` (0-based, as the reference counts): the reference's six lines

        ite: 0 / Train loss: 0.2431... / R_SCORE loss: ... / R_Standard loss: ... / diff: R_SCORE - R_Standard / ***

    (values as Python floats), or with `compact` one line `ite    0 | train loss ... | ...` (6 decimals).
    """
    if compact:
        return [f'ite {ite:4d} | train loss {train_loss:.6f} | R_SCORE {r_score:.6f} | '
                f'R_Standard {r_standard:.6f} | R_SCORE - R_Standard {r_score - r_standard:.6f}']
    return [f'ite: {ite}', f'Train loss: {train_loss}', f'R_SCORE loss: {r_score}', f'R_Standard loss: {r_standard}',
            f'diff: {r_score - r_standard}', '***']


def run(demo='PGDATconsistent', divergence='KL', divergence_C='KL', iterations=ITERATIONS, samples=N0 + N1,
        seed=SEED, device='cpu', out='toy_results', save_every=0, progress=False, log=print, compact=False):
    """Train one toy demo and write its files; returns a dict of the records, C_L, the output folder and the wall
    and CPU (process) seconds of every iteration. Each printed line goes through `log` (see `iteration_lines`).

    Random stream (SPEC section 11): seeds; model init; 10 C rounds (samples, delta); per iteration (samples,
    training-attack delta, R_SCORE-attack delta); x_test. Snapshot test points (--save-every) come from a
    separate generator seeded with `seed`, so they leave the stream, hence the printed numbers, unchanged.
    """
    if demo not in DEMOS:
        raise UserError(f'unknown demo {demo!r}: choose one of {", ".join(DEMOS)}.')
    for d in (divergence, divergence_C):
        if d not in DIVERGENCES:
            raise UserError(f'unknown divergence {d!r}: choose one of {", ".join(DIVERGENCES)}.')
    if samples < 2:
        raise UserError(f'--samples {samples} is too small: use at least 2 (one per class); the reference uses 60000.')
    if iterations < 1:
        raise UserError(f'--iterations {iterations} must be at least 1.')
    if save_every < 0:
        raise UserError(f'--save-every {save_every} must be >= 0 (0 = no snapshots).')
    check_number('--seed', seed, 0, SEED_MAX, example=SEED)
    device = torch.device(device)
    chunk = CPU_CHUNK if device.type == 'cpu' else None
    n0, n1 = split_samples(samples)

    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)

    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    # The C constant: how much the ground truth itself varies in the eps-ball (uses --divergence). Accumulated
    # as the reference does, in a float32 tensor (0 + d_1 + ... + d_10, then / 10).
    c_sum = 0
    for _ in range(C_ROUNDS):
        x = draw_samples(n0, n1, device)
        delta = compute_C(x, divergence, chunk)
        with torch.no_grad():
            c_sum = c_sum + distance(ground_truth(x + delta), ground_truth(x), divergence)
    c_l = (c_sum / C_ROUNDS).item()

    folder = os.path.join(out, f'{demo}_{divergence}')
    os.makedirs(folder, exist_ok=True)
    snapshot_gen = torch.Generator().manual_seed(seed) if save_every else None

    train_loss, score_loss, standard_loss, seconds, cpu_seconds = [], [], [], [], []
    bar = tqdm(range(iterations), desc=f'{demo}_{divergence}', unit='it', disable=None if progress else True,
               file=sys.stderr)
    for ite in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        x = draw_samples(n0, n1, device)
        optimizer.zero_grad()
        loss = objective(model, demo, x, divergence, chunk)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        r_score, r_standard = robust_errors(model, x, divergence_C, chunk)
        train_loss.append(loss.item())
        score_loss.append(r_score)
        standard_loss.append(r_standard)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        for line in iteration_lines(ite, train_loss[-1], r_score, r_standard, compact):
            if progress:
                tqdm.write(line)
            else:
                log(line)
        if save_every and ite % save_every == 0:
            save_predictions(model, draw_test_points(generator=snapshot_gen), folder, suffix=f'_{ite}')
    bar.close()

    save_predictions(model, draw_test_points(), folder)
    for name, rec in (('train', train_loss), ('SCORE', score_loss), ('Standard', standard_loss)):
        np.savetxt(os.path.join(folder, f'record_{name}_loss.txt'), np.array(rec))
    log(f'C_L: {c_l}')
    return {'train_loss': train_loss, 'score_loss': score_loss, 'standard_loss': standard_loss, 'C_L': c_l,
            'seconds': seconds, 'cpu_seconds': cpu_seconds, 'folder': folder}


def get_parser():
    parser = argparse.ArgumentParser(
        description='The 1-D toy demo of SCORE (Pang et al., ICML 2022, Figures 1-2).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # The reference's flags. Its --demo default, 'PGDconsistent', is not a handled value (the run dies); the
    # default here is the SCORE demo it evidently meant, and any other value is refused by argparse.
    parser.add_argument('--demo', type=str, default='PGDATconsistent', choices=DEMOS,
                        help='Training objective (PGDATconsistent = SCORE).')
    parser.add_argument('--divergence', type=str, default='KL', choices=DIVERGENCES,
                        help='Divergence of the training objective, its attack and the C constant.')
    parser.add_argument('--divergence_C', type=str, default='KL', choices=DIVERGENCES,
                        help='Divergence of the recorded R_SCORE / R_Standard errors.')
    # Additions.
    parser.add_argument('--device', type=str, default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='Device; the CPU reproduces the reference\'s printed numbers.')
    parser.add_argument('--seed', type=int, default=SEED, help='Seed of numpy, torch and CUDA.')
    parser.add_argument('--iterations', type=int, default=ITERATIONS, help='Training iterations.')
    parser.add_argument('--samples', type=int, default=N0 + N1,
                        help='Training points per draw, split 5:1 between class 0 and class 1.')
    parser.add_argument('--save-every', type=int, default=0,
                        help='Also write x_test_{ite}.txt, y_test_{ite}.txt, pre_test_{ite}.txt every K iterations '
                             '(0 = never).')
    parser.add_argument('--out', type=str, default='toy_results', help='Results go to OUT/<demo>_<divergence>/.')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (torch.set_num_threads); 0 = PyTorch\'s default (all cores). 1 is the '
                             'default because the blocked CPU path runs thousands of small parallel regions per '
                             'iteration: on cores busy with other jobs, OpenMP threads waiting for each other made '
                             'an iteration up to 80x slower here; 2 can pay off on an otherwise idle machine.')
    parser.add_argument('--no-progress', action='store_true', help='No progress bar.')
    parser.add_argument('--compact', action='store_true',
                        help='One line per iteration instead of the reference\'s six (ite:, Train loss:, '
                             'R_SCORE loss:, R_Standard loss:, diff:, ***).')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f'--device {args.device} but CUDA is not available: use --device cpu.')
    if args.threads < 0:
        raise UserError(f'--threads {args.threads} must be >= 0 (0 = PyTorch\'s default).')
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.demo, args.divergence, args.divergence_C, iterations=args.iterations, samples=args.samples,
              seed=args.seed, device=args.device, out=args.out, save_every=args.save_every,
              progress=not args.no_progress, compact=args.compact)
    print(f'Results in {res["folder"]}')


if __name__ == '__main__':
    exit_on_user_error(main)

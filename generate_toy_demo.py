"""The paper's 1-D toy demo: why the standard robust error over-smooths and SCORE does not.

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

This file states the algorithm with plain autograd, in the paper's notation: probabilities are
F.softmax(logits, dim=1) of (N, 2) logits. Every function that evaluates the network or a posterior takes a strategy
`ops` (softmax, ground_truth, predict, input_grad): `PlainAutograd` below computes them as written
(`--plain-autograd`); by default the script passes core/toy/fast.py's `FastPath`, the same quantities computed by
hand in cache-sized blocks, faster on the CPU (bench/toy.py times both). The command line, the printout and the
output files are in core/toy/cli.py.
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.losses import divergences
from core.toy import fast as toy_fast
from core.toy.cli import Recorder, build_parser, check_run, prepare_folder, save_arrays, set_runtime
from core.utils.errors import UserError, exit_on_user_error

DEMOS = ('PGDAT', 'PGDATconsistent', 'TRADES', 'Standard')
DIVERGENCES = ('KL', 'JSsqrt', 'LSE', 'L2', 'L1', 'Linf')
# The toy's names -> core/losses/divergences.py's (JSsqrt: the per-row JS, see divergence_per_sample).
CORE_DIVERGENCE = {'KL': 'KL', 'LSE': 'LSE', 'L2': '2', 'L1': '1', 'Linf': 'inf'}

# Constants of the reference implementation (the paper's setting).
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


# ----------------------------------------------------------------------------------------------------------------
# The problem: data, ground truth, model, divergences
# ----------------------------------------------------------------------------------------------------------------

def bayes_logits(x):
    """l_c = -(x - mu_c)^2 / (2 sigma_c^2) - log sigma_c + log n_c, c = 0, 1: (N, 1) points -> (N, 2) logits of the
    Bayes posterior, with the reference's counts n0 = 50000, n1 = 10000 as priors (whatever --samples is)."""
    l0 = -(x - MU0) ** 2 / (2 * SIGMA0 ** 2) - np.log(SIGMA0) + np.log(N0)
    l1 = -(x - MU1) ** 2 / (2 * SIGMA1 ** 2) - np.log(SIGMA1) + np.log(N1)
    return torch.cat([l0, l1], dim=1)


def ground_truth(x):
    """P(Y|X), the reference's `Softmax`: (N, 1) points -> (N, 2) probabilities, differentiable in x."""
    return F.softmax(bayes_logits(x), dim=1)


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


def divergence_per_sample(o, t, div):
    """(N,) divergences between (N, K) probability rows o (model) and t (target), before `distance`'s batch mean:
    core/losses/divergences.py's table with the unmasked F.kl_div kernel (`kl_torch`)."""
    if div == 'JSsqrt':  # kept local: core's JS takes log(m) twice, which rounds the gradient differently
        log_m = torch.log((o + t) / 2)
        return 0.5 * (F.kl_div(log_m, o, reduction='none').sum(1) + F.kl_div(log_m, t, reduction='none').sum(1))
    if div not in CORE_DIVERGENCE:
        raise UserError(f'unknown divergence {div!r}: choose one of {", ".join(DIVERGENCES)}.')
    return divergences.distance(o, t, CORE_DIVERGENCE[div], kl=divergences.kl_torch)


def distance(o, t, div):
    """The reference's `distance(o, t, div)`: the batch mean of `divergence_per_sample`, a scalar tensor. Kept
    from the reference: JSsqrt is the sqrt of the batch-mean JS divergence, not the mean of the per-row sqrt-JS."""
    d = divergence_per_sample(o, t, div).mean()
    return torch.sqrt(d) if div == 'JSsqrt' else d


class PlainAutograd:
    """The strategy `ops` of the functions below as written, with plain autograd (`--plain-autograd`).

    softmax(z) = F.softmax(z, dim=1); ground_truth(x) = P(Y|x); predict(model, x) = p(x), the model's softmax
    probabilities, (N, 1) -> (N, 2); input_grad(model, x, target, div) = the attacks' ascent direction at the
    points x (N, 1), the gradient of distance(p(x), target) in x. There p is the model's prediction, or the ground
    truth itself for model=None; target is an (N, 2) constant, or None for the ground truth at the same point,
    P(Y|x), through which the gradient also flows (the SCORE attack). core/toy/fast.py's `FastPath` (the default)
    has the same methods; its input gradient is this one divided by a positive factor, so the attacks take the
    same steps.
    """

    @staticmethod
    def softmax(z):
        return F.softmax(z, dim=1)

    @staticmethod
    def ground_truth(x):
        return ground_truth(x)

    def predict(self, model, x):
        return self.softmax(model(x))

    def input_grad(self, model, x, target, div):
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            p = ground_truth(xr) if model is None else self.predict(model, xr)
            return torch.autograd.grad(distance(p, ground_truth(xr) if target is None else target, div), xr)[0]


def strategy(plain_autograd=False, device='cpu'):
    """The `ops` of a run: PlainAutograd, or (the default) core/toy/fast.py's FastPath for `device`."""
    if plain_autograd:
        return PlainAutograd()
    return toy_fast.FastPath(bayes_logits, divergence_per_sample, device)


# ----------------------------------------------------------------------------------------------------------------
# Attacks: L-inf PGD on the 1-D input, 10 steps of 0.1 from a uniform start, delta clamped to [-1, 1]
# ----------------------------------------------------------------------------------------------------------------

def pgd(ops, model, x, target, div, eps=EPS, alpha=ALPHA, steps=ATTACK_ITERS):
    """Sign-gradient ascent on distance(p(x + delta), target), the reference's attack loop; returns delta (N, 1).

    Threat model: L-inf ball of radius eps around each scalar x, no clamp on x + delta. delta starts at
    U(-eps, eps) (drawn on x's device, `uniform_` on a zeros tensor) and takes `steps` steps of
    delta <- clamp(delta + alpha * sign(grad), -eps, eps), grad = ops.input_grad. model: `build_model()`'s, or
    None to attack the ground truth itself (the C constant); target: (N, 2), or None for P(Y|x + delta). Unlike
    the reference, no parameter gradients are accumulated (numerically irrelevant: it cleared them).
    """
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    with torch.no_grad():
        for _ in range(steps):
            grad = ops.input_grad(model, x + delta, target, div)
            delta = torch.clamp(delta + alpha * grad.sign(), -eps, eps)
    return delta


def compute_C(ops, x, div):
    """delta maximising distance(P(Y|x + delta), P(Y|x)): how far the ground truth itself moves in the ball."""
    return pgd(ops, None, x, ops.ground_truth(x).detach(), div)


def attack_pgd(ops, model, x, y, div):
    """PGD-AT's attack: delta maximising distance(p(x + delta), y), y = P(Y|x) fixed."""
    return pgd(ops, model, x, y, div)


def attack_pgd_consistent(ops, model, x, div):
    """SCORE's attack: delta maximising distance(p(x + delta), P(Y|x + delta)); the target moves with delta."""
    return pgd(ops, model, x, None, div)


def attack_trades(ops, model, x, div):
    """TRADES' attack: delta maximising distance(p(x + delta), p(x)), p(x) detached."""
    with torch.no_grad():
        clean = ops.predict(model, x)
    return pgd(ops, model, x, clean, div)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------

def objective(ops, model, demo, x, div):
    """The training loss of `demo` on the clean batch x (N, 1), as a scalar tensor with a graph to the model.

    TRADES: the robust term targets the ground truth P(Y|x), not the clean output p(x) as TRADES proper would
    (kept from the reference).
    """
    p, truth = ops.predict, ops.ground_truth            # p(x) and P(Y|x)
    if demo == 'PGDAT':
        y = truth(x)
        delta = attack_pgd(ops, model, x, y, div)
        return distance(p(model, x + delta), y, div)
    if demo == 'PGDATconsistent':
        delta = attack_pgd_consistent(ops, model, x, div)
        return distance(p(model, x + delta), truth(x + delta), div)
    if demo == 'TRADES':
        y = truth(x)
        delta = attack_trades(ops, model, x, div)
        return distance(p(model, x), y, div) + TRADES_BETA * distance(p(model, x + delta), y, div)
    if demo == 'Standard':
        return distance(p(model, x), truth(x), div)
    raise UserError(f'unknown demo {demo!r}: choose one of {", ".join(DEMOS)}.')


def robust_errors(ops, model, x, div_c):
    """(R_SCORE, R_Standard) on x with divergence div_c, as floats.

    R_SCORE = distance(p(x + delta'), P(Y|x + delta')), delta' from the SCORE attack; R_Standard = distance(p(x),
    P(Y|x)).
    """
    p, truth = ops.predict, ops.ground_truth
    delta = attack_pgd_consistent(ops, model, x, div_c)
    with torch.no_grad():
        r_score = distance(p(model, x + delta), truth(x + delta), div_c).item()
        r_standard = distance(p(model, x), truth(x), div_c).item()
    return r_score, r_standard


def save_predictions(ops, model, x_test, folder, suffix=''):
    """Write x_test.txt, y_test.txt (ground truth) and pre_test.txt (the model's softmax, unblocked) with numpy's
    savetxt defaults."""
    with torch.no_grad():
        x = x_test.to(next(model.parameters()).device)
        save_arrays(folder, suffix, x_test=x, y_test=ops.ground_truth(x), pre_test=ops.softmax(model(x)))


def run(demo='PGDATconsistent', divergence='KL', divergence_C='KL', iterations=ITERATIONS, samples=N0 + N1,
        seed=SEED, device='cpu', out='toy_results', save_every=0, progress=False, log=print, compact=False,
        plain_autograd=False, overwrite=None):
    """Train one toy demo and write its files; returns a dict of the records, C_L, the output folder and the wall
    and CPU (process) seconds of every iteration. Each printed line goes through `log` (core.toy.cli.iteration_lines).

    The strategy `ops` is `strategy(plain_autograd, device)`: PlainAutograd, or core/toy/fast.py's FastPath (in
    blocks of toy_fast.CPU_CHUNK rows on the CPU, the module under autograd with a one-block input gradient on
    other devices). Both draw the same random numbers.

    Random stream, in the reference's order: seeds; model init; 10 C rounds (samples, delta); per iteration
    (samples, training-attack delta, R_SCORE-attack delta); x_test. Snapshot test points (--save-every) come from a
    separate generator seeded with `seed`, so they leave the stream, hence the printed numbers, unchanged.
    """
    check_run(demo, (divergence, divergence_C), samples, iterations, save_every, seed, DEMOS, DIVERGENCES, SEED)
    if overwrite is not None:  # the command line: an earlier result folder is refused or moved aside
        prepare_folder(os.path.join(out, f'{demo}_{divergence}'), overwrite, log)
    device = torch.device(device)
    ops = strategy(plain_autograd, device)
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
        delta = compute_C(ops, x, divergence)
        with torch.no_grad():
            c_sum = c_sum + distance(ops.ground_truth(x + delta), ops.ground_truth(x), divergence)
    c_l = (c_sum / C_ROUNDS).item()

    folder = os.path.join(out, f'{demo}_{divergence}')
    os.makedirs(folder, exist_ok=True)
    snapshot_gen = torch.Generator().manual_seed(seed) if save_every else None

    records = Recorder(f'{demo}_{divergence}', iterations, progress, log, compact)
    for ite in records:
        x = draw_samples(n0, n1, device)
        optimizer.zero_grad()
        loss = objective(ops, model, demo, x, divergence)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        records.add(ite, loss.item(), *robust_errors(ops, model, x, divergence_C))
        if save_every and ite % save_every == 0:
            save_predictions(ops, model, draw_test_points(generator=snapshot_gen), folder, suffix=f'_{ite}')

    save_predictions(ops, model, draw_test_points(), folder)
    return records.finish(folder, c_l)


def get_parser():
    return build_parser(DEMOS, DIVERGENCES, iterations=ITERATIONS, samples=N0 + N1, seed=SEED)


def main(argv=None):
    args = get_parser().parse_args(argv)
    device = set_runtime(args.device, args.threads)
    res = run(args.demo, args.divergence, args.divergence_C, iterations=args.iterations, samples=args.samples,
              seed=args.seed, device=device, out=args.out, save_every=args.save_every,
              progress=not args.no_progress, compact=args.compact, plain_autograd=args.plain_autograd,
              overwrite=args.overwrite)
    print(f'Results in {res["folder"]}')


if __name__ == '__main__':
    exit_on_user_error(main)

"""The paper's 1-D toy demo (Pang et al., ICML 2022, Figures 1-2), docs/toy.md: the algorithm with plain autograd;
the default strategy is core/toy/fast.py's FastPath, the command line and records are in core/toy/cli.py."""
import functools
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

# The reference implementation's constants.
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


def bayes_logits(x):
    """(N, 1) -> (N, 2) Bayes logits, with the reference's n0, n1 as priors whatever --samples is."""
    l0 = -(x - MU0) ** 2 / (2 * SIGMA0 ** 2) - np.log(SIGMA0) + np.log(N0)
    l1 = -(x - MU1) ** 2 / (2 * SIGMA1 ** 2) - np.log(SIGMA1) + np.log(N1)
    return torch.cat([l0, l1], dim=1)


def ground_truth(x):
    """P(Y|X) (the reference's `Softmax`), differentiable in x."""
    return F.softmax(bayes_logits(x), dim=1)


def split_samples(samples):
    n0 = int(round(samples * N0 / (N0 + N1)))
    return n0, samples - n0


def draw_samples(n0, n1, device):
    """n0 class-0 then n1 class-1 points, (n0 + n1, 1), drawn from the CPU generator as the reference."""
    x0 = torch.distributions.Normal(MU0, SIGMA0).sample((n0, 1))
    x1 = torch.distributions.Normal(MU1, SIGMA1).sample((n1, 1))
    return torch.cat([x0, x1], dim=0).to(device)


def draw_test_points(generator=None):
    """x_test ~ U(-10, 10), (10000, 1); without `generator` from the global stream, as the reference."""
    if generator is None:
        return torch.distributions.Uniform(TEST_LOW, TEST_HIGH).sample((N_TEST, 1))
    return torch.empty(N_TEST, 1).uniform_(TEST_LOW, TEST_HIGH, generator=generator)


def build_model():
    return nn.Sequential(nn.Linear(1, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2))


def divergence_per_sample(o, t, div):
    """(N,) divergences of (N, K) probability rows o (model) from t (target), with the one KL kernel."""
    if div == 'JSsqrt':  # kept local: core's JS takes log(m) twice, which rounds the gradient differently
        log_m = torch.log((o + t) / 2)
        return 0.5 * (F.kl_div(log_m, o, reduction='none').sum(1) + F.kl_div(log_m, t, reduction='none').sum(1))
    if div not in CORE_DIVERGENCE:
        raise UserError(f'unknown divergence {div!r}: choose one of {", ".join(DIVERGENCES)}.')
    return divergences.distance(o, t, CORE_DIVERGENCE[div])


def distance(o, t, div):
    """The reference's batch-mean distance; JSsqrt is the sqrt of the mean JS (docs/differences.md item 33)."""
    d = divergence_per_sample(o, t, div).mean()
    return torch.sqrt(d) if div == 'JSsqrt' else d


class PlainAutograd:
    """`--plain-autograd`: input_grad is d distance(p(x), target) / dx, p = P(Y|x) for model None, as target None."""

    softmax = staticmethod(functools.partial(F.softmax, dim=1))
    ground_truth = staticmethod(ground_truth)

    def predict(self, model, x):
        return self.softmax(model(x))

    def input_grad(self, model, x, target, div):
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            p = ground_truth(xr) if model is None else self.predict(model, xr)
            return torch.autograd.grad(distance(p, ground_truth(xr) if target is None else target, div), xr)[0]


def strategy(plain_autograd=False, device='cpu'):
    return PlainAutograd() if plain_autograd else toy_fast.FastPath(bayes_logits, divergence_per_sample, device)


def pgd(ops, model, x, target, div):
    """The reference's L-inf sign ascent on distance(p(x + delta), target) from U(-eps, eps) on x's device -> delta."""
    delta = torch.zeros_like(x).uniform_(-EPS, EPS)
    with torch.no_grad():
        for _ in range(ATTACK_ITERS):
            grad = ops.input_grad(model, x + delta, target, div)
            delta = torch.clamp(delta + ALPHA * grad.sign(), -EPS, EPS)
    return delta


def objective(ops, model, demo, x, div):
    """`demo`'s loss on x; TRADES' robust term targets P(Y|x), not p(x) (docs/differences.md item 33)."""
    p, truth = ops.predict, ops.ground_truth
    if demo == 'PGDAT':
        y = truth(x)
        delta = pgd(ops, model, x, y, div)  # PGD-AT's attack: the target y = P(Y|x) fixed
        return distance(p(model, x + delta), y, div)
    if demo == 'PGDATconsistent':
        delta = pgd(ops, model, x, None, div)  # SCORE's attack: the target P(Y|x + delta) moves with delta
        return distance(p(model, x + delta), truth(x + delta), div)
    if demo == 'TRADES':
        y = truth(x)
        with torch.no_grad():
            delta = pgd(ops, model, x, p(model, x), div)
        return distance(p(model, x), y, div) + TRADES_BETA * distance(p(model, x + delta), y, div)
    if demo == 'Standard':
        return distance(p(model, x), truth(x), div)
    raise UserError(f'unknown demo {demo!r}: choose one of {", ".join(DEMOS)}.')


def robust_errors(ops, model, x, div_c):
    """(R_SCORE, R_Standard) floats: the SCORE and the standard objective measured with div_c."""
    with torch.no_grad():
        return tuple(objective(ops, model, demo, x, div_c).item() for demo in ('PGDATconsistent', 'Standard'))


def save_predictions(ops, model, x_test, folder, suffix=''):
    with torch.no_grad():
        x = x_test.to(next(model.parameters()).device)
        save_arrays(folder, suffix, x_test=x, y_test=ops.ground_truth(x), pre_test=ops.softmax(model(x)))


def run(demo='PGDATconsistent', divergence='KL', divergence_C='KL', iterations=ITERATIONS, samples=N0 + N1,
        seed=SEED, device='cpu', out='toy_results', save_every=0, progress=False, log=print, compact=False,
        plain_autograd=False, overwrite=None):
    """Train one demo, write its files; the reference's random stream (--save-every's test points: their own)."""
    check_run(demo, (divergence, divergence_C), samples, iterations, save_every, seed, DEMOS, DIVERGENCES, SEED)
    folder = os.path.join(out, f'{demo}_{divergence}')
    if overwrite is not None:  # the command line: an earlier result folder is refused or moved aside
        prepare_folder(folder, overwrite, log)
    device = torch.device(device)
    ops = strategy(plain_autograd, device)
    n0, n1 = split_samples(samples)

    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)

    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    c_sum = 0  # a float32 tensor after the first round, as the reference
    for _ in range(C_ROUNDS):
        x = draw_samples(n0, n1, device)
        delta = pgd(ops, None, x, ops.ground_truth(x).detach(), divergence)  # how far P(Y|x) moves
        with torch.no_grad():
            c_sum = c_sum + distance(ops.ground_truth(x + delta), ops.ground_truth(x), divergence)
    c_l = (c_sum / C_ROUNDS).item()

    os.makedirs(folder, exist_ok=True)
    snapshot_gen = torch.Generator().manual_seed(seed) if save_every else None

    records = Recorder(f'{demo}_{divergence}', iterations, progress, log, compact)
    for ite in records:
        x = draw_samples(n0, n1, device)
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

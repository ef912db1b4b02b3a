"""Speed of generate_toy_demo.py against a line-by-line reference-style implementation, measured in one run.

    python bench/toy.py                      # 3 iterations (2 timed) of PGDATconsistent KL, 60000 samples, 1 thread
    python bench/toy.py --threads 0 --demo PGDAT --iterations 5

Prints the median seconds per training iteration of both (the first iteration and the C constant, computed
once before training, are excluded) and their ratio, in wall-clock time and in CPU time of this process (on a
machine shared with other jobs the CPU time is the steadier of the two; with one thread it is the time the
work itself takes), with the load average, and checks that both print the same losses. The
reference-style code below is the original implementation's algorithm: batch-mean distances
(`nn.KLDivLoss(reduction='batchmean')` for KL), `loss.backward()` in every attack step (accumulating parameter
gradients), F.softmax over the last dim, no blocking. generate_toy_demo.py runs with its default fast path
(core/toy_fast.py); --plain-autograd times its plain-autograd path instead. Use --iterations 5 or more:
the first iteration is not timed.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import generate_toy_demo as toy  # noqa: E402


def _ref_softmax(x):
    l0 = -(x - toy.MU0) ** 2 / (2 * toy.SIGMA0 ** 2) - np.log(toy.SIGMA0) + np.log(toy.N0)
    l1 = -(x - toy.MU1) ** 2 / (2 * toy.SIGMA1 ** 2) - np.log(toy.SIGMA1) + np.log(toy.N1)
    return F.softmax(torch.cat([l0, l1], 1), dim=1)


_kl = nn.KLDivLoss(reduction='batchmean')


def _ref_distance(o, t, div):
    if div == 'KL':
        return _kl(torch.log(o), t)
    if div == 'LSE':
        return ((o - t) ** 2).sum(1).mean()
    if div == 'L2':
        return (o - t).norm(p=2, dim=1).mean()
    if div == 'L1':
        return (o - t).abs().sum(1).mean()
    if div == 'Linf':
        return (o - t).abs().max(1)[0].mean()
    if div == 'JSsqrt':
        m = (o + t) / 2
        return torch.sqrt(0.5 * (_kl(torch.log(m), o) + _kl(torch.log(m), t)))


def _ref_pgd(loss_fn, x):
    delta = torch.zeros_like(x).uniform_(-toy.EPS, toy.EPS)
    delta.requires_grad = True
    for _ in range(toy.ATTACK_ITERS):
        loss = loss_fn(x + delta)
        loss.backward()
        delta.data = torch.clamp(delta + toy.ALPHA * delta.grad.detach().sign(), -toy.EPS, toy.EPS)
        delta.grad.zero_()
    return delta.detach()


def reference_run(demo, div, div_c, iterations, samples=60000, seed=toy.SEED):
    """The reference's loop on the CPU; returns (records as (train, R_SCORE, R_Standard) tuples, wall seconds,
    CPU seconds, C_L)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    n0, n1 = toy.split_samples(samples)
    model = toy.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=toy.LR)
    p = lambda x: F.softmax(model(x), dim=1)
    c = 0.0
    for _ in range(toy.C_ROUNDS):
        x = toy.draw_samples(n0, n1, 'cpu')
        y = _ref_softmax(x)
        d = _ref_pgd(lambda xd, y=y: _ref_distance(_ref_softmax(xd), y, div), x)
        c += _ref_distance(_ref_softmax(x + d), y, div).item()
    records, seconds, cpu_seconds = [], [], []
    for _ in range(iterations):
        t0, c0 = time.perf_counter(), time.process_time()
        x = toy.draw_samples(n0, n1, 'cpu')
        opt.zero_grad()
        if demo == 'PGDAT':
            y = _ref_softmax(x)
            d = _ref_pgd(lambda xd, y=y: _ref_distance(p(xd), y, div), x)
            loss = _ref_distance(p(x + d), y, div)
        elif demo == 'PGDATconsistent':
            d = _ref_pgd(lambda xd: _ref_distance(p(xd), _ref_softmax(xd), div), x)
            loss = _ref_distance(p(x + d), _ref_softmax(x + d), div)
        elif demo == 'TRADES':
            y = _ref_softmax(x)
            clean = p(x).detach()
            d = _ref_pgd(lambda xd, clean=clean: _ref_distance(p(xd), clean, div), x)
            loss = _ref_distance(p(x), y, div) + toy.TRADES_BETA * _ref_distance(p(x + d), y, div)
        else:
            loss = _ref_distance(p(x), _ref_softmax(x), div)
        opt.zero_grad()
        loss.backward()
        opt.step()
        d2 = _ref_pgd(lambda xd: _ref_distance(p(xd), _ref_softmax(xd), div_c), x)
        r_score = _ref_distance(p(x + d2), _ref_softmax(x + d2), div_c).item()
        r_standard = _ref_distance(p(x), _ref_softmax(x), div_c).item()
        records.append((loss.item(), r_score, r_standard))
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
    return records, seconds, cpu_seconds, c / toy.C_ROUNDS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', default='PGDATconsistent', choices=toy.DEMOS)
    parser.add_argument('--divergence', default='KL', choices=toy.DIVERGENCES)
    parser.add_argument('--divergence_C', default='KL', choices=toy.DIVERGENCES)
    parser.add_argument('--iterations', type=int, default=3)
    parser.add_argument('--samples', type=int, default=60000)
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads; 0 = PyTorch\'s default.')
    parser.add_argument('--no-reference', action='store_true', help='Time generate_toy_demo.py only.')
    parser.add_argument('--plain-autograd', action='store_true',
                        help='Time generate_toy_demo.py --plain-autograd instead of its default fast path.')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.demo} {args.divergence} / '
          f'{args.divergence_C}, {args.samples} samples, {args.iterations} iterations (median of iterations 2..)')
    print(f'load average before: {_load()}')

    with tempfile.TemporaryDirectory() as tmp:
        res = toy.run(args.demo, args.divergence, args.divergence_C, iterations=args.iterations,
                      samples=args.samples, out=tmp, log=lambda s: None, plain_autograd=args.plain_autograd)
    fast, fast_cpu = _median(res['seconds']), _median(res['cpu_seconds'])
    path = 'plain autograd' if args.plain_autograd else 'fast path'
    print(f'generate_toy_demo.py ({path}): {fast:.3f} s/iteration wall, {fast_cpu:.3f} s/iteration CPU')
    if args.no_reference:
        return
    records, seconds, cpu_seconds, c_l = reference_run(args.demo, args.divergence, args.divergence_C,
                                                       args.iterations, args.samples)
    ref, ref_cpu = _median(seconds), _median(cpu_seconds)
    print(f'reference-style      : {ref:.3f} s/iteration wall, {ref_cpu:.3f} s/iteration CPU')
    print(f'speed-up             : {ref / fast:.2f}x wall, {ref_cpu / fast_cpu:.2f}x CPU')
    print(f'load average after : {_load()}')
    ours = list(zip(res['train_loss'], res['score_loss'], res['standard_loss']))
    worst = max(abs(a - b) / abs(b) for r, o in zip(records, ours) for a, b in zip(o, r))
    print(f'largest relative difference of the printed losses: {worst:.1e}; C_L {res["C_L"]:.7g} vs {c_l:.7g}')


def _median(seconds):
    """Median of the iterations after the first (all of them if there is only one)."""
    return float(np.median(seconds[1:] or seconds))


def _load():
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


if __name__ == '__main__':
    main()

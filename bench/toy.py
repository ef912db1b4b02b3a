"""Seconds per training iteration of generate_toy_demo.py against a reference-style loop, timed alternately in
one run.

    python bench/toy.py                      # PGDATconsistent KL, 60000 samples, 1 thread, 2 rounds of 3 iterations
    python bench/toy.py --demo PGDAT --divergence_C L1 --rounds 3 --plain-autograd

Each round runs generate_toy_demo.py's `run` (its default FastPath strategy; with --plain-autograd also its
PlainAutograd strategy) and then the reference-style loop below, each for --iterations iterations from the same
seed, so machine load falls on all of them alike. Per variant it prints the median wall and CPU (process) seconds
per iteration over every round (the first iteration of each run and the C constant before training are not
timed), and the ratio of the reference-style loop's time to each variant's. CPU time is the steadier figure on a
machine shared with other jobs. It also checks that the variants print the same losses.

What the reference-style loop is. `reference_run` does per iteration what the original implementation's loop
does, operation for operation: a fresh draw of 60000 points; `F.softmax(., dim=1)` of the (N, 2) logits for the
model and the ground truth; batch-mean distances (`nn.KLDivLoss(reduction='batchmean')` for KL); attacks whose
10 steps each call `loss.backward()` through the whole network (accumulating parameter gradients, cleared
before the training backward); the training loss, backward and Adam step; then the R_SCORE attack and the
R_SCORE / R_Standard losses, built with graphs as the original builds them. It differs from the original in
where it runs and in being a restatement: it runs on the CPU under this PyTorch (the original hard-codes
`.cuda()`, so it cannot run on this machine), and it is written from the original's described behaviour, not
copied from its file, so the ratio printed is against this loop, not a measurement of the original's own code.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import generate_toy_demo as toy  # noqa: E402

REFERENCE = "bench/toy.py's reference-style loop"


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
    """The reference-style loop on the CPU; returns the same keys as generate_toy_demo.run (no files written)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    n0, n1 = toy.split_samples(samples)
    model = toy.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=toy.LR)
    p = lambda x: F.softmax(model(x), dim=1)
    c = 0
    for _ in range(toy.C_ROUNDS):
        x = toy.draw_samples(n0, n1, 'cpu')
        y = _ref_softmax(x)
        d = _ref_pgd(lambda xd, y=y: _ref_distance(_ref_softmax(xd), y, div), x)
        c = c + _ref_distance(_ref_softmax(x + d), y, div)        # a float32 tensor, as the original
    res = {'train_loss': [], 'score_loss': [], 'standard_loss': [], 'seconds': [], 'cpu_seconds': [],
           'C_L': (c / toy.C_ROUNDS).item()}
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
        res['score_loss'].append(_ref_distance(p(x + d2), _ref_softmax(x + d2), div_c).item())
        res['standard_loss'].append(_ref_distance(p(x), _ref_softmax(x), div_c).item())
        res['train_loss'].append(loss.item())
        res['seconds'].append(time.perf_counter() - t0)
        res['cpu_seconds'].append(time.process_time() - c0)
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', default='PGDATconsistent', choices=toy.DEMOS)
    parser.add_argument('--divergence', default='KL', choices=toy.DIVERGENCES)
    parser.add_argument('--divergence_C', default='KL', choices=toy.DIVERGENCES)
    parser.add_argument('--iterations', type=int, default=3, help='Iterations per run (the first is not timed).')
    parser.add_argument('--rounds', type=int, default=2, help='Alternating rounds (each runs every variant once).')
    parser.add_argument('--samples', type=int, default=60000)
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads; 0 = PyTorch\'s default.')
    parser.add_argument('--plain-autograd', action='store_true',
                        help='Also time generate_toy_demo.py --plain-autograd (its PlainAutograd strategy).')
    args = parser.parse_args()
    if args.iterations < 2 or args.rounds < 1:
        parser.error('use --iterations 2 or more (the first is not timed) and --rounds 1 or more.')
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {_cpu()}, {os.cpu_count()} cores, '
          f'torch {torch.__version__}, {torch.get_num_threads()} thread(s)')
    print(f'command: python {" ".join(sys.argv)}')
    print(f'{args.demo} {args.divergence} / {args.divergence_C}, {args.samples} samples, {args.rounds} round(s) of '
          f'{args.iterations} iterations per variant; load average before: {_load()}')

    variants = ['generate_toy_demo.py'] + (['generate_toy_demo.py --plain-autograd'] if args.plain_autograd else [])
    times = {v: ([], []) for v in variants + [REFERENCE]}
    results = {}
    for _ in range(args.rounds):
        for v in variants + [REFERENCE]:
            if v == REFERENCE:
                res = reference_run(args.demo, args.divergence, args.divergence_C, args.iterations, args.samples)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    res = toy.run(args.demo, args.divergence, args.divergence_C, iterations=args.iterations,
                                  samples=args.samples, out=tmp, log=lambda s: None,
                                  plain_autograd=v.endswith('--plain-autograd'))
            times[v][0].extend(res['seconds'][1:])
            times[v][1].extend(res['cpu_seconds'][1:])
            results.setdefault(v, res)

    ref_wall, ref_cpu = (float(np.median(t)) for t in times[REFERENCE])
    for v in variants + [REFERENCE]:
        wall, cpu = (float(np.median(t)) for t in times[v])
        print(f'{v:40s}: {wall:.3f} s/iteration wall, {cpu:.3f} s/iteration CPU (median of {len(times[v][0])})')
    for v in variants:
        wall, cpu = (float(np.median(t)) for t in times[v])
        print(f'ratio {REFERENCE} / {v}: {ref_wall / wall:.2f}x wall, {ref_cpu / cpu:.2f}x CPU')
    print(f'load average after: {_load()}')
    ref = results[REFERENCE]
    for v in variants:
        worst = max(abs(a - b) / abs(b) for key in ('train_loss', 'score_loss', 'standard_loss')
                    for a, b in zip(results[v][key], ref[key]))
        print(f'{v}: largest relative difference of the printed losses from the reference-style loop '
              f'{worst:.1e}; C_L {results[v]["C_L"]:.7g} vs {ref["C_L"]:.7g}')


def _cpu():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load():
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


if __name__ == '__main__':
    main()

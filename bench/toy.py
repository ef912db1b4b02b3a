"""Seconds per generate_toy_demo.py iteration vs a reference-style loop (docs/benchmarks.md#toy-demo-benchtoypy)."""
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
from core.toy.cli import Recorder  # noqa: E402

DEMO, DIVERGENCE, SAMPLES = 'PGDATconsistent', 'KL', 60000
REFERENCE = "bench/toy.py's reference-style loop"
_kl = nn.KLDivLoss(reduction='batchmean')


def _ref_distance(o, t):
    return _kl(torch.log(o), t)


def _ref_pgd(loss_fn, x):
    delta = torch.zeros_like(x).uniform_(-toy.EPS, toy.EPS)
    delta.requires_grad = True
    for _ in range(toy.ATTACK_ITERS):
        loss = loss_fn(x + delta)
        loss.backward()
        delta.data = torch.clamp(delta + toy.ALPHA * delta.grad.detach().sign(), -toy.EPS, toy.EPS)
        delta.grad.zero_()
    return delta.detach()


def reference_run(iterations):
    """generate_toy_demo.run's records (no files written), timed alike."""
    np.random.seed(toy.SEED)
    torch.manual_seed(toy.SEED)
    n0, n1 = toy.split_samples(SAMPLES)
    model = toy.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=toy.LR)
    p, truth = (lambda x: F.softmax(model(x), dim=1)), toy.ground_truth
    c = 0
    for _ in range(toy.C_ROUNDS):
        x = toy.draw_samples(n0, n1, 'cpu')
        y = truth(x)
        d = _ref_pgd(lambda xd, y=y: _ref_distance(truth(xd), y), x)
        c = c + _ref_distance(truth(x + d), y)        # a float32 tensor, as the original
    records = Recorder('reference', iterations, log=lambda s: None)
    for ite in records:
        x = toy.draw_samples(n0, n1, 'cpu')
        opt.zero_grad()
        d = _ref_pgd(lambda xd: _ref_distance(p(xd), truth(xd)), x)
        loss = _ref_distance(p(x + d), truth(x + d))
        opt.zero_grad()
        loss.backward()
        opt.step()
        d2 = _ref_pgd(lambda xd: _ref_distance(p(xd), truth(xd)), x)
        records.add(ite, loss.item(), _ref_distance(p(x + d2), truth(x + d2)).item(),
                    _ref_distance(p(x), truth(x)).item())
    return {**records.res, 'C_L': (c / toy.C_ROUNDS).item()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iterations', type=int, default=3, help='Iterations per run (the first is not timed).')
    parser.add_argument('--rounds', type=int, default=2, help='Alternating rounds (each runs every variant once).')
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads; 0 = PyTorch\'s default.')
    parser.add_argument('--plain-autograd', action='store_true', help='Also time the --plain-autograd strategy.')
    args = parser.parse_args()
    if args.iterations < 2 or args.rounds < 1:
        parser.error('use --iterations 2 or more (the first is not timed) and --rounds 1 or more.')
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {_cpu()}, {os.cpu_count()} cores, '
          f'torch {torch.__version__}, {torch.get_num_threads()} thread(s)')
    print(f'command: python {" ".join(sys.argv)}')
    print(f'{DEMO} {DIVERGENCE} / {DIVERGENCE}, {SAMPLES} samples, {args.rounds} round(s) of '
          f'{args.iterations} iterations per variant; load average before: {_load()}')

    variants = ['generate_toy_demo.py'] + (['generate_toy_demo.py --plain-autograd'] if args.plain_autograd else [])
    times = {v: ([], []) for v in variants + [REFERENCE]}
    results = {}
    for _ in range(args.rounds):
        for v in variants + [REFERENCE]:
            if v == REFERENCE:
                res = reference_run(args.iterations)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    res = toy.run(DEMO, DIVERGENCE, DIVERGENCE, iterations=args.iterations, samples=SAMPLES, out=tmp,
                                  log=lambda s: None, plain_autograd=v.endswith('--plain-autograd'))
            times[v][0].extend(res['seconds'][1:])
            times[v][1].extend(res['cpu_seconds'][1:])
            results.setdefault(v, res)

    med = {v: [float(np.median(t)) for t in times[v]] for v in variants + [REFERENCE]}
    for v in variants + [REFERENCE]:
        wall, cpu = med[v]
        print(f'{v:40s}: {wall:.3f} s/iteration wall, {cpu:.3f} s/iteration CPU (median of {len(times[v][0])})')
    for v in variants:
        (ref_wall, ref_cpu), (wall, cpu) = med[REFERENCE], med[v]
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

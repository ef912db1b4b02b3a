#!/usr/bin/env python3
"""Images per second of one train-wa.py training step, reference-style vs optimised, in the same run.

One step is exactly what the trainer (core/training/trainer.py) does per batch with weight averaging: the BN momentum
trick, the loss (TRADES-KL or SCORE-LSE: the clean forward, whose detached softmax is the attack's target,
T = 10 PGD steps on the input, the adversarial forward; the original ran one more, separate target forward,
docs/differences.md item 42),
zero_grad, backward, the SGD step (two groups, Nesterov) and the EMA update of the averaged model. The batch
is fixed random data.

Variants (each its own trainer with the same seed, timed round-robin so machine load hits all alike):
    reference      the plain module, contiguous NCHW tensors, float32: this project's step without
                   --channels-last / --compile / --amp, the baseline of every ratio printed (not the original
                   itself, which runs one forward more per step)
    channels_last  the same math with the model and batches in channels_last (oneDNN's preferred layout)
    compile        channels_last + torch.compile of the training model (--compile; slow to compile)
    bf16           channels_last + autocast bfloat16 (--bf16; NOT the same math, shown for information)

It also measures the fp32 matmul FLOP/s of this machine (2048^3 sgemm, before and after) and estimates the FLOPs
of one step as (2T + 6) forward passes F (torch.utils.flop_counter counts F): T attack forwards with T
input-only backwards (~F each), the clean and adversarial forwards and their full backward (~4F). The
achieved fraction of the machine's matmul rate is printed.

    python bench/train_step.py                                   # wrn-16-4-swish, batch 32, both losses
    python bench/train_step.py --model wrn-28-10-swish --batch-size 128 --steps 5 --compile
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.data import get_data_info  # noqa: E402
from core.run.parser import parser_train  # noqa: E402
from core.training.builder import build_trainer  # noqa: E402
from core.utils.distributed import Runtime  # noqa: E402

LOSSES = {'TRADES-KL': ['--beta', '6.0', '--ls', '0.1'], 'SCORE-LSE': ['--beta', '4.0', '--LSE', '--ls', '0']}


def matmul_flops(n=2048, seconds=3.0):
    """Measured float32 matmul FLOP/s (2 n^3 per product), best of repeated timings over ~`seconds`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = float('inf'), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n ** 3 / best


def make_trainer(model, batch_size, loss_flags, variant, iters):
    flags = ['--desc', 'bench', '--model', model, '--batch-size', str(batch_size), '--attack-iter', str(iters),
             '--num-adv-epochs', '400'] + loss_flags
    if variant != 'reference':
        flags.append('--channels-last')
    if variant == 'compile':
        flags.append('--compile')
    args = parser_train().parse_args(flags)
    runtime = Runtime(device=torch.device('cpu'), amp='bf16' if variant == 'bf16' else 'none')
    return build_trainer(get_data_info('./data/cifar10s'), args, runtime)


def one_step(trainer, x, y, epoch):
    """One batch of AdversarialTrainer.train (a 1-batch 'epoch'); returns (seconds, loss)."""
    t = time.perf_counter()
    metrics = trainer.train([(x, y)], epoch=epoch)
    return time.perf_counter() - t, metrics['loss']


def forward_flops(model, x):
    """FLOPs of one forward pass (torch.utils.flop_counter: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='wrn-16-4-swish')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--attack-iter', type=int, default=10)
    parser.add_argument('--steps', type=int, default=3, help='timed steps per variant (after 1 warm-up step)')
    parser.add_argument('--losses', nargs='+', default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument('--compile', action='store_true', help='also time channels_last + torch.compile')
    parser.add_argument('--bf16', action='store_true', help='also time autocast bf16 (different math)')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    variants = ['reference', 'channels_last'] + (['compile'] if opts.compile else []) + (['bf16'] if opts.bf16 else [])

    print(f'{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}')
    flops_before = matmul_flops()
    print(f'fp32 matmul: {flops_before / 1e9:.1f} GFLOP/s (2048^3 sgemm, best of ~3 s)')
    torch.manual_seed(0)
    x = torch.rand(opts.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (opts.batch_size,))

    for loss_name in opts.losses:
        trainers = {v: make_trainer(opts.model, opts.batch_size, LOSSES[loss_name], v, opts.attack_iter)
                    for v in variants}
        first = {v: one_step(trainers[v], x, y, epoch=1) for v in variants}  # warm-up (and compilation)
        ref_loss = first['reference'][1]
        times = {v: [] for v in variants}
        for step in range(opts.steps):
            for v in variants:
                times[v].append(one_step(trainers[v], x, y, epoch=2 + step)[0])
        fwd = forward_flops(trainers['reference'].model, x)
        flops = (2 * opts.attack_iter + 6) * fwd
        print(f'\n{loss_name}, {opts.model}, batch {opts.batch_size}, PGD-{opts.attack_iter}: '
              f'~{flops / 1e9:.1f} GFLOP per step ({2 * opts.attack_iter + 6} x {fwd / 1e9:.2f} GFLOP forward)')
        ref = statistics.median(times['reference'])
        for v in variants:
            med = statistics.median(times[v])
            print(f'  {v:14s} {med:7.2f} s/step (median of {opts.steps}; min {min(times[v]):.2f}) '
                  f'{opts.batch_size / med:7.2f} img/s  x{ref / med:.2f} vs reference  '
                  f'{flops / med / 1e9:6.1f} GFLOP/s = {100 * flops / med / flops_before:4.1f}% of matmul  '
                  f'first-step loss {first[v][1]:.6f} (reference {ref_loss:.6f})', flush=True)
    flops_after = matmul_flops()
    print(f'\nfp32 matmul after: {flops_after / 1e9:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Throughput of one train-wa.py step (AdversarialTrainer.train on a fixed batch): images/s, FLOP/s, MFU, hours."""
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
from core.training.cost import flop_per_image  # noqa: E402
from core.utils.compute import device_peak, timed  # noqa: E402
from core.utils.distributed import Runtime  # noqa: E402

# The original README's two commands: 400 epochs of ceil(48976 / 512) = 96 batches (1,024 validation images).
RECIPES = {'TRADES-KL (--beta 5.0 --ls 0.1)': ['--beta', '5.0', '--ls', '0.1'],
           'SCORE-LSE (--beta 4.0 --LSE --ls 0)': ['--beta', '4.0', '--LSE', '--ls', '0']}
RECIPE_MODEL, RECIPE_IMAGES = 'wrn-28-10-swish', 400 * 96 * 512


def trainer_for(model, batch_size, iters, loss_flags, device, amp, channels_last, compile_):
    flags = ['--desc', 'bench', '--model', model, '--batch-size', str(batch_size), '--attack-iter', str(iters),
             '--num-adv-epochs', '400'] + loss_flags + (['--channels-last'] if channels_last else [])
    flags += ['--compile'] if compile_ else []
    return build_trainer(get_data_info('./data/cifar10s'), parser_train().parse_args(flags),
                         Runtime(device=torch.device(device), amp=amp))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='wrn-16-4-swish')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--attack-iter', type=int, default=10)
    p.add_argument('--steps', type=int, default=3, help='timed steps per variant (after one warm-up step)')
    p.add_argument('--LSE', action='store_true', help='SCORE-LSE (--beta 4.0 --LSE --ls 0) instead of TRADES-KL')
    p.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--variants', action='store_true', help='also time NCHW fp32 / channels_last / bf16 side by side')
    p.add_argument('--no-projection', action='store_true', help='skip the recipe projection (its FLOP count)')
    opts = p.parse_args()
    loss = RECIPES['SCORE-LSE (--beta 4.0 --LSE --ls 0)'] if opts.LSE else ['--beta', '6.0', '--ls', '0.1']
    asked = (opts.amp, opts.channels_last, opts.compile)
    settings = [asked] + ([s for s in (('none', False, False), ('none', True, False), ('bf16', True, False))
                           if s != asked] if opts.variants else [])
    print(f'{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  torch {torch.__version__}, device '
          f'{opts.device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}')
    torch.manual_seed(0)
    x, y = torch.rand(opts.batch_size, 3, 32, 32), torch.randint(0, 10, (opts.batch_size,))
    trainers = [trainer_for(opts.model, opts.batch_size, opts.attack_iter, loss, opts.device, *s) for s in settings]
    flops = flop_per_image(trainers[0], x, y)
    for t in trainers:
        t.train([(x, y)], epoch=1)  # warm-up (and compilation)
    times = [[] for _ in trainers]
    for step in range(opts.steps):
        for t, ts in zip(trainers, times):
            ts.append(timed(lambda t=t, e=2 + step: t.train([(x, y)], epoch=e), t.device))
    print(f'{opts.model}, batch {opts.batch_size}, PGD-{opts.attack_iter}, {"SCORE-LSE" if opts.LSE else "TRADES-KL"}:'
          f' {flops:.4g} FLOP per image (torch.utils.flop_counter)')
    base = statistics.median(times[0])
    rates = []
    for (amp, cl, comp), ts in zip(settings, times):
        med = statistics.median(ts)
        peak, label = device_peak(opts.device, amp)
        ips = opts.batch_size / med
        rates.append(ips * flops)
        print(f'  amp {amp:4s} channels_last {cl!s:5s} compile {comp!s:5s}: {ips:8.2f} images/s, '
              f'{ips * flops:.3g} FLOP/s, MFU {ips * flops / peak:.2%} of {peak:.3g} ({label}); '
              f'x{base / med:.2f} vs the first (median of {opts.steps})')
    if opts.no_projection:
        return
    one = (torch.rand(1, 3, 32, 32), torch.randint(0, 10, (1,)))
    print(f'\nProjection (the first setting\'s {rates[0]:.3g} FLOP/s scaled to {RECIPE_MODEL}; N devices under '
          f'torchrun: linear scaling assumed), {RECIPE_IMAGES:,} training images each:')
    for name, flags in RECIPES.items():
        recipe = trainer_for(RECIPE_MODEL, 1, 10, flags, 'cpu', 'none', False, False)
        hours = RECIPE_IMAGES * flop_per_image(recipe, *one) / rates[0] / 3600
        split = ', '.join(f'{n} devices {hours / n:,.1f} h' for n in (2, 4, 8))
        print(f'  {name}: {hours:,.1f} device-hours; {split}')


if __name__ == '__main__':
    main()

"""The toy demo's command line, run checks, printout and files (written atomically); generate_toy_demo.py holds the
algorithm."""
import argparse
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from core.utils.atomic import move_aside, write_atomic
from core.utils.distributed import add_device_argument, setup
from core.utils.errors import SEED_MAX, ArgumentParser, UserError, check_number


def build_parser(demos, divergences, iterations, samples, seed):
    parser = ArgumentParser(
        description='The 1-D toy demo of SCORE (Pang et al., ICML 2022, Figures 1-2).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # The reference's flags; its --demo default 'PGDconsistent' crashed (docs/differences.md item 33).
    parser.add_argument('--demo', default='PGDATconsistent', choices=demos, help='PGDATconsistent = SCORE.')
    parser.add_argument('--divergence', default='KL', choices=divergences, help='Divergence: objective, attack, C.')
    parser.add_argument('--divergence_C', default='KL', choices=divergences, help='Divergence: R_SCORE, R_Standard.')
    # Additions.
    add_device_argument(parser)  # auto (CUDA if available), cpu or cuda; the CPU reproduces the printed numbers
    parser.add_argument('--seed', type=int, default=seed, help='Seed of numpy, torch and CUDA.')
    parser.add_argument('--iterations', type=int, default=iterations, help='Training iterations.')
    parser.add_argument('--samples', type=int, default=samples, help='Training points per draw, split 5:1.')
    parser.add_argument('--save-every', type=int, default=0, help='Write {x,y,pre}_test_{ite}.txt every K.')
    parser.add_argument('--out', default='toy_results', help='Results go to OUT/<demo>_<divergence>/.')
    parser.add_argument('--overwrite', action='store_true', help='Move earlier results into a dated subfolder.')
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads; 0 = PyTorch\'s default.')
    parser.add_argument('--plain-autograd', action='store_true', help='Skip core/toy/fast.py (slower, same losses).')
    parser.add_argument('--no-progress', action='store_true', help='No progress bar.')
    parser.add_argument('--compact', action='store_true', help='One line per iteration instead of six.')
    return parser


def check_run(demo, divergence_names, samples, iterations, save_every, seed, demos, divergences, example_seed):
    """A UserError naming the first bad value, before anything is seeded or written."""
    if demo not in demos:
        raise UserError(f'unknown demo {demo!r}: choose one of {", ".join(demos)}.')
    for d in divergence_names:
        if d not in divergences:
            raise UserError(f'unknown divergence {d!r}: choose one of {", ".join(divergences)}.')
    if samples < 2:
        raise UserError(f'--samples {samples} is too small: use at least 2 (one per class); the reference uses 60000.')
    if iterations < 1:
        raise UserError(f'--iterations {iterations} must be at least 1.')
    if save_every < 0:
        raise UserError(f'--save-every {save_every} must be >= 0 (0 = no snapshots).')
    check_number('--seed', seed, 0, SEED_MAX, example=example_seed)


def prepare_folder(folder, overwrite, log=print):
    """Refuse a folder holding results unless `overwrite`; then move them into folder/previous-<date>/."""
    old = sorted(f for f in os.listdir(folder) if not f.startswith('previous-')) if os.path.isdir(folder) else []
    if old and not overwrite:
        raise UserError(f'{folder} holds the results of an earlier run ({old[0]}, ...): pass --overwrite to move them '
                        'into a dated subfolder of it (nothing is deleted), or another --out.')
    if old:
        aside, names = move_aside(folder)
        log(f'{len(names)} earlier result files moved to {aside}')
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:   # read-only, or a file in the way
        raise UserError(f'{folder} cannot be made ({e.strerror}): pass --out DIR, a folder you can write.') from None


def set_runtime(device, threads):
    """The torch.device of --device (a UserError for CUDA without CUDA); sets --threads (0: PyTorch's default)."""
    if threads < 0:
        raise UserError(f'--threads {threads} must be >= 0 (0 = PyTorch\'s default).')
    if threads:
        torch.set_num_threads(threads)
    return setup(device).device


def save_arrays(folder, suffix='', **arrays):
    for name, a in arrays.items():
        write_atomic(os.path.join(folder, f'{name}{suffix}.txt'), lambda f, a=a: np.savetxt(f, a.cpu().numpy()))


class Recorder:
    """`for ite in recorder:` runs the iterations behind a tqdm bar and times each; `add` records and prints one."""

    def __init__(self, desc, iterations, progress=False, log=print, compact=False):
        self.desc, self.iterations, self.progress, self.log, self.compact = desc, iterations, progress, log, compact
        self.res = {k: [] for k in ('train_loss', 'score_loss', 'standard_loss', 'seconds', 'cpu_seconds')}
        self._clocks = None

    def __iter__(self):
        bar = tqdm(range(self.iterations), desc=self.desc, unit='it', disable=None if self.progress else True,
                   file=sys.stderr)
        for ite in bar:
            self._clocks = time.perf_counter(), time.process_time()
            yield ite
        bar.close()

    def add(self, ite, train_loss, r_score, r_standard):
        seconds = time.perf_counter() - self._clocks[0], time.process_time() - self._clocks[1]
        for key, value in zip(self.res, (train_loss, r_score, r_standard, *seconds)):
            self.res[key].append(value)
        lines = [f'ite: {ite}', f'Train loss: {train_loss}', f'R_SCORE loss: {r_score}',  # the reference's six
                 f'R_Standard loss: {r_standard}', f'diff: {r_score - r_standard}', '***']
        if self.compact:
            lines = [f'ite {ite:4d} | train loss {train_loss:.6f} | R_SCORE {r_score:.6f} | '
                     f'R_Standard {r_standard:.6f} | R_SCORE - R_Standard {r_score - r_standard:.6f}']
        for line in lines:
            (tqdm.write if self.progress else self.log)(line)

    def finish(self, folder, c_l):
        for key, name in (('train_loss', 'train'), ('score_loss', 'SCORE'), ('standard_loss', 'Standard')):
            write_atomic(os.path.join(folder, f'record_{name}_loss.txt'),
                         lambda f, key=key: np.savetxt(f, np.array(self.res[key])))
        self.log(f'C_L: {c_l}')
        return {**self.res, 'C_L': c_l, 'folder': folder}

"""Golden steps: the scripts, run end to end for three training steps, give the recorded weights and losses.

Each case runs a training script (train-wa.py or without_DDPM/train_cifar.py) in this process on a tiny
synthetic CIFAR-10 (seed 0; 64 test images), with a tiny WideResNet, seed 1, one CPU thread, batch 8 and 24
training images (three optimiser steps; train-wa.py takes 8 more for its validation split), then reads the files
the script wrote under their reference names: the weight checksum (sum and sum of squares, float64, of every
float tensor of weights-last.pt / model_best.pth) and, for train-wa.py, the epoch's mean training loss from
stats_adv.csv. Only the scripts' command lines and output files are used, so the test holds whatever happens to
the modules behind them.

The figures were printed by `python tests/test_golden_steps.py` (on an Intel Xeon). Tolerance: the same code
on another x86 CPU model differs in the last float32 bits (other SIMD kernels) and a sign-gradient attack
amplifies a flipped bit: tests/test_objectives.py's figures, recorded on an AMD EPYC, differ on an Intel Xeon
by up to 2.8e-6 relative on a three-step loss and 3.6e-6 on a weight checksum. 5e-5 is over ten times that,
and below what a changed formula, random draw, forward order or BatchNorm update moves (1e-4 and more: a KL
written by hand instead of F.kl_div moves a three-step loss in the 4th digit).
"""
import csv
import os
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from script_runner import run_script  # noqa: E402
from synthetic import write_cifar10  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL_LOSS = RTOL_WEIGHTS = 5e-5  # see the docstring; tests/test_objectives.py uses them too

TRAIN_WA = ['--model', 'wrn-10-1-swish', '--batch-size', '8', '--batch-size-validation', '16',
            '--num-adv-epochs', '2', '--stop-after', '1', '--lr', '0.1', '--attack-iter', '2', '--seed', '1',
            '--num-workers', '0', '--validation-size', '8', '--data', 'cifar10', '--device', 'cpu']
WA_CASES = {
    'trades-kl': ['--beta', '5.0', '--ls', '0.1'],
    'score-lse': ['--beta', '4.0', '--LSE', '--ls', '0.1', '--clip_value', '0.01'],
    'mart': ['--beta', '6.0', '--mart'],
    'pgd-at': [],
}
WITHOUT_DDPM = ['--model', 'WideResNet', '--wrn-depth', '10', '--width-factor', '1', '--batch-size', '8',
                '--epochs', '2', '--stop-after', '0', '--lr-max', '0.1', '--attack-iters', '2', '--seed', '1',
                '--num-workers', '0', '--test_epsilon', '0', '--device', 'cpu']
WITHOUT_DDPM_CASES = {
    'pgd-kl-clip': ['--attack', 'PGD', '--divergence', 'KL', '--clip_loss', '0.4'],
    'pgd-lse-clip': ['--attack', 'PGD', '--divergence', 'LSE', '--clip_loss', '0.4'],
    'trades-kl-clip': ['--attack', 'TRADES', '--divergence', 'KL', '--clip_loss', '0.4'],
    'trades-lse-clip': ['--attack', 'TRADES', '--divergence', 'LSE', '--clip_loss', '0.4'],
}

# name -> (mean training loss of the 3 steps or None, (sum, sum of squares) of the saved float tensors)
EXPECTED = {
    'mart': (2.5368709564208984, (739.2969863548528, 1661.2031729423231)),
    'pgd-at': (2.3947983582814536, (739.4709752518961, 1661.1345742114113)),
    'score-lse': (0.7136425375938416, (739.6742561278918, 1661.3183362307286)),
    'trades-kl': (2.312955141067505, (739.6271680833352, 1661.2794936526595)),
    'pgd-kl-clip': (None, (410.9937912233112, 884.4914070310169)),
    'pgd-lse-clip': (None, (411.20703421509955, 884.530473048799)),
    'trades-kl-clip': (None, (422.57900406161923, 886.8148075892582)),
    'trades-lse-clip': (None, (422.8216463769303, 886.7531609436977)),
}


def checksum(tensors):
    tensors = [t for t in tensors if t.is_floating_point()]
    return sum(float(t.double().sum()) for t in tensors), sum(float((t.double() ** 2).sum()) for t in tensors)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def run(name, tmp):
    """(mean training loss or None, weight checksum) of case `name`, run in folder `tmp`."""
    if name in WA_CASES:
        write_cifar10(pathlib.Path(tmp), 32, 64)  # 8 of the 32 form the validation split
        argv = TRAIN_WA + WA_CASES[name] + ['--data-dir', tmp, '--log-dir', os.path.join(tmp, 'logs'), '--desc', name]
        assert run_script(os.path.join(ROOT, 'train-wa.py'), argv) == 0
        folder = os.path.join(tmp, 'logs', name)
        weights = load(os.path.join(folder, 'weights-last.pt'))
        with open(os.path.join(folder, 'stats_adv.csv')) as f:
            loss = float(next(csv.DictReader(f))['train_loss'])
        return loss, checksum([t for part in weights.values() for t in part.values()])
    write_cifar10(pathlib.Path(tmp), 24, 64)
    old = os.getcwd()
    os.chdir(tmp)  # the script writes trained_models/ under the current directory
    try:
        argv = WITHOUT_DDPM + WITHOUT_DDPM_CASES[name] + ['--data-dir', tmp, '--fname', name]
        assert run_script(os.path.join(ROOT, 'without_DDPM', 'train_cifar.py'), argv) == 0
    finally:
        os.chdir(old)
    weights = load(os.path.join(tmp, 'trained_models', 'Triangle', 'CIFAR-10', name, 'model_best.pth'))
    return None, checksum(weights['state_dict'].values())


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(WA_CASES) + sorted(WITHOUT_DDPM_CASES))
def test_three_steps_give_the_recorded_weights(name, tmp_path, one_thread):
    loss, (total, squares) = run(name, str(tmp_path))
    expected_loss, (expected_total, expected_squares) = EXPECTED[name]
    if expected_loss is not None:
        assert loss == pytest.approx(expected_loss, rel=RTOL_LOSS)
    assert total == pytest.approx(expected_total, rel=RTOL_WEIGHTS)
    assert squares == pytest.approx(expected_squares, rel=RTOL_WEIGHTS)


if __name__ == '__main__':
    import tempfile
    torch.set_num_threads(1)
    for case in sorted(WA_CASES) + sorted(WITHOUT_DDPM_CASES):
        with tempfile.TemporaryDirectory() as d:
            print(f'    {case!r}: {run(case, d)!r},', flush=True)

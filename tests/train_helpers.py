"""Shared pieces of the train-wa.py end-to-end tests (tests/test_train.py, tests/test_train_robustness.py):
the tiny synthetic data set, the tiny run's flags, running the script in this process, reading its files."""
import csv
import os

import numpy as np
import torch
from script_runner import run_script
from synthetic import random_images, write_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train-wa.py')

REFERENCE_KEYS = ['augment', 'batch_size', 'batch_size_validation', 'data_dir', 'log_dir', 'data', 'desc', 'model',
                  'normalize', 'pretrained_file', 'num_adv_epochs', 'adv_eval_freq', 'beta', 'lr', 'weight_decay',
                  'scheduler', 'nesterov', 'clip_grad', 'attack', 'attack_eps', 'attack_step', 'attack_iter',
                  'keep_clean', 'debug', 'mart', 'unsup_fraction', 'aux_data_filename', 'seed', 'LSE', 'ls',
                  'clip_value', 'CutMix', 'tau']
CSV_COLUMNS = ['train_loss', 'train_clean_acc', 'train_adversarial_acc', 'epoch', 'lr', 'test_clean_acc',
               'test_adversarial_acc', 'eval_adversarial_acc']
COMPUTE_COLUMNS = ['images_per_s', 'flop_per_image', 'flops_per_s', 'mfu']  # ours, after the reference's
CSV_COLUMNS += COMPUTE_COLUMNS


def make_data_dir(tmp_path_factory):
    """The tests' `data_dir` fixture (module scope): ./data/cifar10/{train,test}.npz (80 and 32 random images) and
    a 64-image generated-data file."""
    root = tmp_path_factory.mktemp('data')
    image, label = random_images(write_cifar10(root, 80, 32), 64)
    np.savez(root / 'aux.npz', image=image, label=label)
    return root


def tiny_args(data_dir, log_dir, desc, *extra, data='cifar10s'):
    args = ['--device', 'cpu', '--data-dir', str(data_dir), '--log-dir', str(log_dir), '--desc', desc, '--data', data,
            '--model', 'wrn-10-1-swish', '--batch-size', '16', '--batch-size-validation', '16',
            '--num-adv-epochs', '2', '--attack-iter', '1', '--num-workers', '0', '--validation-size', '16']
    if data.endswith('s'):
        args += ['--aux-data-filename', str(data_dir / 'aux.npz')]
    return args + list(extra)


def run(argv):
    """Run train-wa.py in this process; returns its exit code (0 when main returns)."""
    return run_script(SCRIPT, argv)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def read_csv(path, reproducible=False):
    """The rows of a stats_adv.csv; `reproducible` drops the compute columns (timings differ between runs)."""
    with open(path) as f:
        rows = list(csv.reader(f))
    if reproducible:
        keep = [i for i, name in enumerate(rows[0]) if name not in COMPUTE_COLUMNS]
        rows = [[r[i] for i in keep] for r in rows]
    return rows


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for key in a:
        assert list(a[key]) == list(b[key])
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


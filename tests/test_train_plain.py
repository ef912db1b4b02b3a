"""train.py (the plain Trainer, no weight averaging): flags, files, log lines, the adversarial-test epochs,
the stale best rule, the ignored flags' warning, refusal of bad input.
"""
import csv
import importlib.util
import json
import os

import pytest
import torch
from script_runner import run_script
from synthetic import write_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train.py')
_spec = importlib.util.spec_from_file_location('train_plain', SCRIPT)
train_plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_plain)


def test_adversarial_test_epochs():
    n = 400
    epochs = [e for e in range(1, n + 1) if train_plain.adversarial_test_epoch(e, n, 25)]
    assert epochs == list(range(25, 376, 25)) + list(range(390, 401))  # every 25th, then 390..400 (N > 90)
    assert [e for e in range(1, 11) if train_plain.adversarial_test_epoch(e, 10, 25)] == [6, 7, 8, 9, 10]


def test_ignored_flags_are_detected():
    assert train_plain.ignored_flags(['--LSE', '--ls=0', '--beta', '4', '--lr', '0.1']) == ['--LSE', '--ls']
    assert train_plain.ignored_flags(['--lse']) == []


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    write_cifar10(root, 32, 16)
    return root


def run(argv):
    return run_script(SCRIPT, argv)


def tiny(data_dir, log_dir, *extra):
    return ['--data-dir', data_dir, '--log-dir', log_dir, '--desc', 'plain', '--data', 'cifar10',
            '--model', 'wrn-10-1-swish', '--batch-size', '16', '--batch-size-validation', '16',
            '--num-adv-epochs', '2', '--attack-iter', '1', '--num-workers', '0', '--device', 'cpu'] + list(extra)


def test_two_epochs_files_and_lines(data_dir, tmp_path, capsys):
    assert run(tiny(data_dir, tmp_path, '--beta', '6.0', '--LSE')) == 0
    err = capsys.readouterr().err
    assert 'warning: train.py ignores --LSE' in err
    run_dir = tmp_path / 'plain'
    args = json.load(open(run_dir / 'args.txt'))
    assert 'tau' not in args and args['LSE'] is True  # stored, ignored
    for name in ('weights-best.pt', 'weights-last.pt'):
        assert list(torch.load(run_dir / name, weights_only=True)) == ['model_state_dict']
    log = open(run_dir / 'log-train.log').read()
    assert 'Adversarial training for 2 epochs' in log and 'RST' not in log and 'Eval' not in log
    assert log.count('Adversarial Accuracy-\tTrain:') == 3  # 2 epochs (both among the last 5) + the final line
    assert '\tTest: ' in log.splitlines()[-2]
    header = next(csv.reader(open(run_dir / 'stats_adv.csv')))
    assert header == ['train_loss', 'train_clean_acc', 'train_adversarial_acc', 'epoch', 'lr', 'test_clean_acc',
                      'test_adversarial_acc', 'images_per_s', 'flop_per_image', 'flops_per_s', 'mfu']
    assert run(tiny(data_dir, tmp_path, '--beta', '6.0')) == 2  # an existing run is refused
    assert 'already holds files' in capsys.readouterr().err


def test_tau_is_not_a_flag(data_dir, tmp_path, capsys):
    assert run(tiny(data_dir, tmp_path, '--tau', '0.995')) == 2
    assert 'unrecognized arguments: --tau' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def read_rows(run_dir):
    with open(run_dir / 'stats_adv.csv') as f:
        return list(csv.DictReader(f))


def test_resume_with_another_lr_and_restart_before_the_first_epoch(data_dir, tmp_path):
    """train.py resumes as train-wa.py: --resume-changed-flags lr scales the schedule by new / old (cosinew is
    proportional to --lr, so epoch 2's logged LR is half the uninterrupted run's) and rewrites args.txt; a folder
    with args.txt only (killed before epoch 1 was saved) restarts at epoch 1 under --resume."""
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    assert run(tiny(data_dir, full, '--scheduler', 'cyclic')) == 0
    assert run(tiny(data_dir, cut, '--scheduler', 'cyclic', '--stop-after', '1')) == 0
    assert run(tiny(data_dir, cut, '--scheduler', 'cyclic', '--resume', '--resume-changed-flags', 'lr',
                    '--lr', '0.2')) == 0
    lr_full, lr_cut = (float(read_rows(d / 'plain')[1]['lr']) for d in (full, cut))
    assert lr_cut == pytest.approx(lr_full / 2, rel=1e-9)
    assert json.load(open(cut / 'plain' / 'args.txt'))['lr'] == 0.2
    assert '--lr changed from 0.4 to 0.2' in open(cut / 'plain' / 'log-train.log').read()

    killed = tmp_path / 'killed' / 'plain'
    killed.mkdir(parents=True)
    (killed / 'args.txt').write_bytes((full / 'plain' / 'args.txt').read_bytes().replace(
        str(full).encode(), str(tmp_path / 'killed').encode()))
    assert run(tiny(data_dir, tmp_path / 'killed', '--scheduler', 'cyclic', '--resume')) == 0
    assert 'No epoch of this run was saved: starting it from epoch 1.' in open(killed / 'log-train.log').read()
    assert [r['epoch'] for r in read_rows(killed)] == ['1', '2']

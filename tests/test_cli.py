"""Every entry script answers --help (argparse expands '%' in help texts: a stray one crashes --help)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('script', ['train-wa.py', 'eval-aa.py', 'generate_toy_demo.py', 'train.py',
                                    'without_DDPM/train_cifar.py', 'without_DDPM/eval_cifar.py'])
def test_help(script):
    out = subprocess.run([sys.executable, os.path.join(ROOT, script), '--help'], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'usage:' in out.stdout


@pytest.mark.parametrize('script', ['train-wa.py', 'eval-aa.py', 'generate_toy_demo.py', 'train.py', 'plot_stats.py',
                                    'plot_toy_demo.py', 'without_DDPM/train_cifar.py', 'without_DDPM/eval_cifar.py',
                                    'scripts/export.py', 'scripts/subset_npz.py'])
def test_a_flag_argparse_refuses_is_one_line_exit_2(script):
    out = subprocess.run([sys.executable, os.path.join(ROOT, script), '--no-such-flag'], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.count('\n') == 1 and '(see --help)' in out.stderr, out.stderr


def test_train_augment_flag_takes_the_reference_bools_and_the_names():
    sys.path.insert(0, ROOT)
    from core.run.parser import parser_train
    p = parser_train()
    assert p.parse_args(['--desc', 'x', '--augment', 'False']).augment is False
    assert p.parse_args(['--desc', 'x']).augment is True
    assert p.parse_args(['--desc', 'x', '--augment', 'autoaugment']).augment == 'autoaugment'
    with pytest.raises(SystemExit) as e:
        p.parse_args(['--desc', 'x', '--augment', 'bogus'])
    assert e.value.code == 2

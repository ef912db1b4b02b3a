"""scripts/results_table.py: run folders (args.txt + eval-aa.json) matched against docs/published.csv."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'results_table.py')


def run_folder(root, name, n, clean, robust, **flags):
    folder = root / name
    folder.mkdir()
    args = dict({'data': 'cifar10s', 'model': 'wrn-28-10-swish', 'beta': 3.0, 'LSE': True, 'mart': False, 'tau': 0.995,
                 'ls': 0.0}, **flags)
    (folder / 'args.txt').write_text(json.dumps(args))
    (folder / 'eval-aa.json').write_text(json.dumps({'clean_accuracy': clean, 'robust_accuracy': robust, 'n': n,
                                                     'norm': 'Linf', 'eps': 8 / 255, 'version': 'standard',
                                                     'model': args['model']}))
    return str(folder)


def run(*argv):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, cwd=ROOT)


def test_rows_are_matched_subsets_marked_and_other_settings_left_alone(tmp_path):
    full = run_folder(tmp_path, 'full', 10000, 0.8811, 0.6154)
    subset = run_folder(tmp_path, 'subset', 200, 0.9, 0.6)
    other = run_folder(tmp_path, 'other', 10000, 0.5, 0.2, model='wrn-16-1-swish')
    out = run(full, subset, other, '--csv', str(tmp_path / 't.csv'))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and lines[0].startswith('| run | data | model | objective')
    assert '| released-c10-wrn28 | -0.50 | +0.50 |' in lines[2]          # 88.11 - 88.61, 61.54 - 61.04
    assert '200 (subset)' in lines[3] and 'subset: not compared' in lines[3] and lines[3].endswith('|  |  |')
    assert '| score-lse |' in lines[4] and lines[4].endswith('|  |  |  |')
    assert (tmp_path / 't.csv').read_text().count('\n') == 4
    again = run(full, '--csv', str(tmp_path / 't.csv'))
    assert again.returncode == 2 and 'exists' in again.stderr and 'Traceback' not in again.stderr


def test_a_folder_without_an_evaluation_is_one_line(tmp_path):
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'args.txt').write_text('{}')
    out = run(str(folder))
    assert out.returncode == 2 and 'eval-aa.json: missing' in out.stderr and 'Traceback' not in out.stderr

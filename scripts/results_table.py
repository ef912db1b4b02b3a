#!/usr/bin/env python3
"""One Markdown (or --csv) row per run folder (args.txt, eval-aa.json), matched against docs/published.csv."""
import argparse
import csv
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.run.parser import parser_train  # noqa: E402
from core.run.run_dir import read_args  # noqa: E402
from core.training.objectives import select  # noqa: E402
from core.utils.atomic import write_atomic  # noqa: E402
from core.utils.errors import UserError, exit_on_user_error  # noqa: E402

PUBLISHED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'published.csv')
COLUMNS = ['run', 'data', 'model', 'objective', 'beta', 'norm', 'eps', 'n', 'clean', 'robust', 'version',
           'published', 'clean diff', 'robust diff']


def read_run(run_dir):
    """The row of one run folder (accuracies in percent)."""
    saved = read_args(run_dir)
    path = os.path.join(run_dir, 'eval-aa.json')
    try:
        with open(path, encoding='utf-8') as f:
            result = json.load(f)
    except FileNotFoundError:
        raise UserError(f'{path}: missing; evaluate the run first (eval-aa.py --log-dir ... --desc ...).') from None
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: cannot be read ({e}); evaluate the run again with eval-aa.py.') from None
    flags = parser_train().parse_args(['--desc', 'x'])
    vars(flags).update(saved)
    return {'run': run_dir, 'data': saved.get('data'), 'model': result.get('model') or saved.get('model'),
            'objective': select(flags, bool(flags.tau)), 'beta': flags.beta, 'norm': result['norm'],
            'eps': result['eps'], 'n': result['n'], 'clean': 100 * result['clean_accuracy'],
            'robust': 100 * result['robust_accuracy'], 'version': result['version']}


def match(row, published):
    """(the published row of the same setting or None, whether `row` is a subset evaluation, never compared)."""
    for p in published:
        beta = None if row['beta'] is None else float(row['beta'])
        if (p['data'] == row['data'] and p['model'] == row['model'] and p['objective'] == row['objective']
                and float(p['beta']) == beta and p['norm'] == row['norm'] and p['version'] == row['version']
                and abs(float(p['eps']) - row['eps']) < 1e-6):
            return p, row['n'] < int(p['n'])
    return None, False


def table(run_dirs, published_path=PUBLISHED):
    with open(published_path, encoding='utf-8') as f:
        published = list(csv.DictReader(f))
    rows = []
    for run_dir in run_dirs:
        row = read_run(run_dir)
        p, subset = match(row, published)
        row['published'] = '' if p is None else p['row'] + (' (subset: not compared)' if subset else '')
        for key in ('clean', 'robust'):
            known = p is not None and not subset and p[key] != ''
            row[f'{key} diff'] = f'{row[key] - float(p[key]):+.2f}' if known else ''
        if subset:
            row['n'] = f"{row['n']} (subset)"
        rows.append(row)
    return rows


def markdown(rows):
    def cell(v):
        return f'{v:.2f}' if isinstance(v, float) else ('' if v is None else str(v))
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(cell(r[c]) for c in COLUMNS) + ' |' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run_dirs', nargs='+', metavar='RUN_DIR')
    p.add_argument('--csv', metavar='FILE', help='also write the rows to FILE (refused if FILE exists)')
    args = p.parse_args(argv)
    rows = table(args.run_dirs)
    print(markdown(rows))
    if args.csv:
        if os.path.exists(args.csv):
            raise UserError(f'--csv {args.csv}: the file exists; choose another name (nothing is overwritten).')
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(args.csv, lambda f: f.write(out.getvalue().encode()))


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

#!/usr/bin/env python3
"""Training curves of one or more train-wa.py runs, overlaid, from their stats_adv.csv.

    python plot_stats.py logs/small-trades-kl logs/small-score-lse -o curves.png
"""
import os
import sys

from core.run.plotting import STATS_FILE, draw_curves, read_run, save_figure
from core.run.run_dir import ARGS_FILE
from core.utils.errors import ArgumentParser, UserError, exit_on_user_error

FORMATS = ('png', 'pdf', 'svg')


def check_output(path, log_dirs, force):
    """The figure format of `path` (its suffix); never an input file, an existing file only with --force."""
    fmt = os.path.splitext(path)[1].lstrip('.').lower()
    if fmt not in FORMATS:
        raise UserError(f'-o {path}: unknown figure format {fmt!r}; end the name in .{", .".join(FORMATS)}.')
    inputs = {os.path.realpath(os.path.join(d, name)) for d in log_dirs for name in (STATS_FILE, ARGS_FILE)}
    if os.path.realpath(path) in inputs:
        raise UserError(f'-o {path} is an input of the plot; pick another output path, e.g. curves.{fmt}.')
    if os.path.exists(path) and not force:
        raise UserError(f'-o {path} exists already; pass --force to replace it, or pick another path.')
    return fmt


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('log_dirs', nargs='+', metavar='LOG_DIR', help='run folders (LOG_DIR/DESC of train-wa.py)')
    parser.add_argument('-o', '--output', default='curves.png', help='.png, .pdf or .svg figure (default: curves.png)')
    parser.add_argument('--force', action='store_true', help='replace an existing output file')
    parser.add_argument('--title', default=None, help='figure title')
    args = parser.parse_args(argv)
    runs = [read_run(d) for d in args.log_dirs]
    fmt = check_output(args.output, args.log_dirs, args.force)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        save_figure(draw_curves(runs, title=args.title), args.output, fmt=fmt)
    except PermissionError as e:
        raise UserError(f'-o {args.output}: {e.filename or args.output} cannot be written ({e.strerror}); pass -o '
                        'with a path in a folder you can write.') from None
    print(f'{args.output}: {", ".join(label for label, _ in runs)}')
    return args.output


if __name__ == '__main__':
    sys.exit(0 if exit_on_user_error(main) else 1)

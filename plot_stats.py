#!/usr/bin/env python3
"""Training curves of one or more train-wa.py runs, overlaid, from their stats_adv.csv.

    python plot_stats.py logs/small-trades-kl logs/small-score-lse -o curves.png

Panels: train loss; train clean / adversarial accuracy; test clean / adversarial accuracy; validation adversarial
accuracy; learning rate; one colour per run, labelled with its --desc (args.txt). train-wa.py draws the same figure
for its own run into LOG_DIR/curves.png after every epoch.
"""
import argparse
import os
import sys

from core.run.plotting import draw_curves, read_run, save_figure
from core.utils.errors import UserError, exit_on_user_error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('log_dirs', nargs='+', metavar='LOG_DIR', help='run folders (LOG_DIR/DESC of train-wa.py)')
    parser.add_argument('-o', '--output', default='curves.png', help='PNG to write (default: curves.png)')
    parser.add_argument('--title', default=None, help='figure title')
    args = parser.parse_args(argv)
    runs = [read_run(d) for d in args.log_dirs]
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise UserError(f'-o {args.output}: the folder {out_dir} does not exist; create it or pick another path.')
    save_figure(draw_curves(runs, title=args.title), args.output)
    print(f'{args.output}: {", ".join(label for label, _ in runs)}')
    return args.output


if __name__ == '__main__':
    sys.exit(0 if exit_on_user_error(main) else 1)

"""Training curves of runs from their `stats_adv.csv` (plot_stats.py, train-wa.py's curves.png), drawn with
Matplotlib's object API on an Agg canvas (no pyplot, no global backend: a training script's state is untouched).
"""
import os
import sys

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.run.run_dir import read_args
from core.utils.atomic import write_atomic
from core.utils.errors import UserError

STATS_FILE = 'stats_adv.csv'
CURVES_FILE = 'curves.png'
# (panel title, y label, [(csv column, line style), ...], percent?)
PANELS = (
    ('Train loss', 'loss', [('train_loss', '-')], False),
    ('Train accuracy', 'accuracy (%)', [('train_clean_acc', '-'), ('train_adversarial_acc', '--')], True),
    ('Test accuracy', 'accuracy (%)', [('test_clean_acc', '-'), ('test_adversarial_acc', '--')], True),
    ('Validation adversarial accuracy', 'accuracy (%)', [('eval_adversarial_acc', '--')], True),
    ('Learning rate', 'lr', [('lr', '-')], False),
)
LINE_NAMES = {'-': 'clean', '--': 'adversarial'}


def read_run(log_dir):
    """(args.txt's `desc` or the folder name, DataFrame of stats_adv.csv) of the run folder `log_dir`."""
    path = os.path.join(log_dir, STATS_FILE)
    if not os.path.isfile(path):
        raise UserError(f'{path} not found: pass run folders (LOG_DIR/DESC) written by train-wa.py.')
    try:
        stats = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f'{path}: not a readable CSV ({str(e).splitlines()[0]}).') from None
    if 'epoch' not in stats.columns:
        raise UserError(f'{path}: no `epoch` column; is it a stats_adv.csv of train-wa.py?')
    text = [c for c in stats.columns if not pd.api.types.is_numeric_dtype(stats[c])]
    if text:   # a hand-edited or foreign CSV would otherwise be drawn as if it were numbers
        raise UserError(f'{path}: column {text[0]} holds text, not numbers; is it a stats_adv.csv of train-wa.py?')
    saved = read_args(log_dir, missing_ok=True, fix='repair or remove it (the run is then labelled with its folder '
                                                     'name)') or {}
    return saved.get('desc', os.path.basename(os.path.normpath(log_dir))), stats


def draw_curves(runs, title=None):
    """A Figure with the panels of `PANELS`, one colour per (label, stats) of `runs`; empty cells are skipped."""
    fig = Figure(figsize=(15, 8), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).flatten()
    colours = [f'C{i % 10}' for i in range(len(runs))]
    for ax, (panel, ylabel, columns, percent) in zip(axes, PANELS):
        ax.set_title(panel)
        ax.set_xlabel('epoch')
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for (label, stats), colour in zip(runs, colours):
            for column, style in columns:
                if column not in stats.columns:
                    continue
                values = pd.to_numeric(stats[column], errors='coerce')
                keep = values.notna()
                if not keep.any():
                    continue
                name = label if len(columns) == 1 else f'{label} ({LINE_NAMES[style]})'
                ax.plot(stats['epoch'][keep].to_numpy(), (values[keep] * (100 if percent else 1)).to_numpy(),
                        linestyle=style, marker='o', markersize=3, color=colour, label=name)
        if ax.lines:
            ax.legend(fontsize='small')
    axes[-1].set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path, dpi=100, fmt='png'):
    """Write `fig` atomically in format `fmt` (png, pdf, svg)."""
    write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def write_run_curves(log_dir):
    """LOG_DIR/curves.png from LOG_DIR/stats_adv.csv (save_epoch's hook); a failure is one warning line on stderr
    and None, never an exception."""
    path = os.path.join(log_dir, CURVES_FILE)
    try:
        save_figure(draw_curves([read_run(log_dir)]), path)
    except Exception as e:  # noqa: BLE001 - a figure is never worth stopping a training run for
        print(f'warning: {path} not drawn: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
        return None
    return path

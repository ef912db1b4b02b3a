"""The toy demo's figures without MATLAB: plot_toy_demo.m's panel per run folder, the loss curves and, with --grid,
every panel in one PNG (docs/toy.md)."""
import argparse
import os

import numpy as np

from core.run.plotting import save_figure
from core.utils.errors import ArgumentParser, UserError, exit_on_user_error

GROUND_TRUTH_COLOUR = (0 / 255, 139 / 255, 139 / 255)
LEARNED_COLOUR = (0.85, 0.325, 0.098)
LABELS = {'PGDAT': 'PGD-AT', 'PGDATconsistent': 'SCORE (PGD-AT consistent)', 'TRADES': 'TRADES',
          'Standard': 'standard training'}


def _save(plt, fig, png):
    fig.tight_layout()
    save_figure(fig, png, dpi='figure')
    plt.close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib import font_manager
    names = {f.name for f in font_manager.fontManager.ttflist}
    plt.rcParams['font.family'] = 'serif'
    plt.rcParams['font.serif'] = [n for n in ('Times New Roman', 'Times', 'Nimbus Roman', 'DejaVu Serif')
                                  if n in names] or ['DejaVu Serif']
    plt.rcParams['mathtext.fontset'] = 'stix'
    return plt


def load_predictions(folder, ite=None):
    """(x, true P(Y=0|x), learned P(Y=0|x)) as 1-D arrays, from {x,y,pre}_test[_ite].txt."""
    suffix = '' if ite is None else f'_{ite}'
    paths = [os.path.join(folder, f'{n}{suffix}.txt') for n in ('x_test', 'y_test', 'pre_test')]
    for p in paths:
        if not os.path.isfile(p):
            hint = ' (run generate_toy_demo.py with --save-every)' if ite is not None else ''
            raise UserError(f'{p} not found{hint}.')
    x, y, pre = (_loadtxt(p, ndmin=2) for p in paths)
    return x[:, 0], y[:, 0], pre[:, 0]


def _loadtxt(path, **kw):
    try:
        return np.loadtxt(path, **kw)
    except ValueError as e:
        raise UserError(f'{path} is not a generate_toy_demo.py record ({e}); run the demo again.') from None


def _new(png, force):
    if os.path.exists(png) and not force:
        raise UserError(f'{png} exists already; pass --force to replace it, or another --out-dir / --grid.')
    return png


def mean_abs_error(folder, ite=None):
    """Mean over the test points of |learned - true| P(Y=0|X)."""
    _, y, pre = load_predictions(folder, ite)
    return float(np.mean(np.abs(pre - y)))


def _name(folder):
    return os.path.basename(os.path.normpath(folder))


def draw_posterior(ax, folder, ite=None, fontsize=23):
    x, y, pre = load_predictions(folder, ite)
    demo = _name(folder).rsplit('_', 1)[0]
    ax.scatter(x, y, s=80, color=GROUND_TRUTH_COLOUR, label=' Ground truth')
    ax.scatter(x, pre, s=80, color=LEARNED_COLOUR, label=f' Learned by {LABELS.get(demo, demo)}')
    ax.grid(True)
    ax.set_ylim(0, 1)
    ax.set_yticks(np.round(np.arange(0, 1.01, 0.1), 1))
    ax.set_xlim(-5, 8)
    ax.set_xticks(np.arange(-5, 9))
    ax.tick_params(labelsize=fontsize * 0.75)
    ax.set_xlabel('$X$', fontsize=fontsize)
    ax.set_ylabel('$P(Y=0|X)$', fontsize=fontsize)
    title = _name(folder) + (', final' if ite is None else f', iteration {ite}')
    ax.set_title(f'{title}\nmean |learned - true| = {np.mean(np.abs(pre - y)):.4f}', fontsize=max(fontsize * 0.6, 11))
    ax.legend(loc='lower left', fontsize=fontsize * 0.65, markerscale=1.0)


def plot_posterior(folder, png, ite=None, fontsize=23):
    """The panel of one run as a 640 x 480 PNG."""
    plot_grid([folder], [ite], png, size=(8, 6), dpi=80, fontsize=fontsize)


def plot_grid(folders, ites, png, size=(5, 3.75), dpi=64, fontsize=14):
    """A row per run folder, a column per iteration (None = the final model), each panel `size` inches."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(folders), len(ites), figsize=(size[0] * len(ites), size[1] * len(folders)), dpi=dpi,
                             squeeze=False)
    for r, folder in enumerate(folders):
        for c, ite in enumerate(ites):
            draw_posterior(axes[r][c], folder, ite, fontsize)
    _save(plt, fig, png)


def plot_losses(folder, png):
    """Train loss, R_SCORE and R_Standard per iteration (record_*_loss.txt), log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=80)
    for name, label, colour in (('train', 'train loss', 'k'), ('SCORE', '$R_{SCORE}$', LEARNED_COLOUR),
                                ('Standard', '$R_{Standard}$', GROUND_TRUTH_COLOUR)):
        path = os.path.join(folder, f'record_{name}_loss.txt')
        if not os.path.isfile(path):
            raise UserError(f'{path} not found; is {folder} a finished generate_toy_demo.py run?')
        rec = np.atleast_1d(_loadtxt(path))
        ax.plot(np.arange(1, len(rec) + 1), rec, color=colour, label=label, linewidth=1.5)
    ax.set_yscale('log')
    ax.grid(True, which='both', alpha=0.4)
    ax.set_xlabel('iteration', fontsize=16)
    ax.set_ylabel('loss', fontsize=16)
    ax.set_title(_name(folder), fontsize=16)
    ax.legend(fontsize=14)
    _save(plt, fig, png)


def _ite(v):
    if v == 'final':
        return None
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f'an iteration number or `final` expected, got {v!r}') from None


def main(argv=None):
    parser = ArgumentParser(description='Draw generate_toy_demo.py results (the panels of Figures 1-2).')
    parser.add_argument('folders', nargs='+', help='Run folders, e.g. toy_results/PGDAT_KL.')
    parser.add_argument('--ite', type=_ite, nargs='*', help='Snapshot iterations to draw, or `final` (the default).')
    parser.add_argument('--out-dir', help='Where to write the PNGs (default: each folder).')
    parser.add_argument('--grid', metavar='PNG', help='Also draw every panel into one PNG (a row per folder).')
    parser.add_argument('--force', action='store_true', help='Replace PNGs that exist already.')
    args = parser.parse_args(argv)
    work = []   # (draw, png, line): every output is checked before the first is drawn
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise UserError(f'{folder} is not a folder; pass a run folder such as toy_results/PGDAT_KL.')
        out, run = args.out_dir or folder, _name(folder)
        for ite in (args.ite or [None]):
            png = os.path.join(out, f'{run}{"" if ite is None else f"_{ite}"}_posterior.png')
            work.append((lambda png, f=folder, i=ite: plot_posterior(f, png, i), png,
                         f'{run}{"" if ite is None else f" ite {ite}"}: mean |learned - true| P(Y=0|X) = '
                         f'{mean_abs_error(folder, ite):.4f} -> {png}'))
        if os.path.isfile(os.path.join(folder, 'record_train_loss.txt')):
            png = os.path.join(out, f'{run}_losses.png')
            work.append((lambda png, f=folder: plot_losses(f, png), png, f'{run}: loss curves -> {png}'))
        else:
            print(f'{run}: no record_*_loss.txt (run not finished), loss curves skipped')
    if args.grid:
        work.append((lambda png: plot_grid(args.folders, args.ite or [None], png), args.grid,
                     f'all panels -> {args.grid}'))
    for _, png, _ in work:
        _new(png, args.force)
    for _, png, _ in work:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
        except OSError as e:
            raise UserError(f'{os.path.dirname(os.path.abspath(png))} cannot be made ({e.strerror}): pass --out-dir '
                            'DIR, a folder you can write.') from None
    for draw, png, line in work:
        draw(png)
        print(line)

if __name__ == '__main__':
    exit_on_user_error(main)

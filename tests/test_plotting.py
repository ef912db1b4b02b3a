"""plot_stats.py and train-wa.py's curves.png: the figure drawn from a 3-epoch stats_adv.csv written by hand."""
import csv
import importlib.util
import os
import stat
import subprocess
import sys

import pytest

from core.run import plotting
from core.utils.errors import UserError, exit_on_user_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
COLUMNS = ['train_loss', 'train_clean_acc', 'train_adversarial_acc', 'epoch', 'lr', 'test_clean_acc',
           'test_adversarial_acc', 'eval_adversarial_acc']


def write_run(folder, desc, rows, columns=COLUMNS):
    """A run folder as train-wa.py leaves it: args.txt (JSON with desc) and stats_adv.csv (empty cells allowed)."""
    os.makedirs(folder)
    with open(os.path.join(folder, 'args.txt'), 'w') as f:
        f.write(f'{{"desc": "{desc}", "beta": 5.0}}')
    with open(os.path.join(folder, 'stats_adv.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return str(folder)


# epoch 1 has no test adversarial evaluation (an empty cell, as with --adv-eval-freq > 1)
KL_ROWS = [[2.0, 0.20, 0.10, 1, 0.2, 0.25, '', 0.12],
           [1.8, 0.30, 0.15, 2, 0.1, 0.30, 0.18, 0.16],
           [1.5, 0.35, 0.20, 3, 0.01, 0.33, 0.20, 0.19]]
LSE_ROWS = [[0.9, 0.18, 0.08, 1, 0.2, 0.22, '', 0.10],
            [0.8, 0.26, 0.12, 2, 0.1, 0.27, 0.15, 0.14],
            [0.7, 0.31, 0.17, 3, 0.01, 0.30, 0.17, 0.16]]


def lines_of(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_two_runs_overlaid_with_their_desc(tmp_path):
    runs = [plotting.read_run(write_run(tmp_path / 'a', 'trades-kl', KL_ROWS)),
            plotting.read_run(write_run(tmp_path / 'b', 'score-lse', LSE_ROWS))]
    assert [label for label, _ in runs] == ['trades-kl', 'score-lse']
    fig = plotting.draw_curves(runs)
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == ['Train loss', 'Train accuracy', 'Test accuracy',
                                               'Validation adversarial accuracy', 'Learning rate']
    assert all(ax.get_xlabel() == 'epoch' for ax in axes)
    loss, train, test, val, lr = map(lines_of, axes)
    assert loss == {'trades-kl': ([1, 2, 3], [2.0, 1.8, 1.5]), 'score-lse': ([1, 2, 3], [0.9, 0.8, 0.7])}
    assert train['trades-kl (clean)'] == ([1, 2, 3], pytest.approx([20.0, 30.0, 35.0]))  # percent
    assert train['score-lse (adversarial)'] == ([1, 2, 3], pytest.approx([8.0, 12.0, 17.0]))
    assert test['trades-kl (adversarial)'] == ([2, 3], pytest.approx([18.0, 20.0]))  # the empty cell is skipped
    assert test['score-lse (clean)'] == ([1, 2, 3], pytest.approx([22.0, 27.0, 30.0]))
    assert val['score-lse'] == ([1, 2, 3], pytest.approx([10.0, 14.0, 16.0]))
    assert lr['trades-kl'] == ([1, 2, 3], [0.2, 0.1, 0.01])
    # one colour per run in every panel, adversarial lines dashed
    for ax in axes:
        colours = {line.get_label().split(' ')[0]: line.get_color() for line in ax.lines}
        assert colours['trades-kl'] != colours['score-lse']
    assert {line.get_linestyle() for line in axes[1].lines if 'adversarial' in line.get_label()} == {'--'}


def test_cli_writes_a_png_atomically(tmp_path):
    a = write_run(tmp_path / 'a', 'trades-kl', KL_ROWS)
    b = write_run(tmp_path / 'b', 'score-lse', LSE_ROWS)
    out = tmp_path / 'out' / 'curves.png'
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'plot_stats.py'), a, b, '-o', str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert os.listdir(out.parent) == ['curves.png']  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~umask  # a usual file, not mkstemp's 0600


def test_cli_bad_folder_exit_2(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('plot_stats', os.path.join(ROOT, 'plot_stats.py'))
    plot_stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_stats)
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(lambda: plot_stats.main([str(tmp_path / 'nothing'), '-o', str(tmp_path / 'c.png')]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'stats_adv.csv' in err
    assert os.listdir(tmp_path) == []
    (tmp_path / 'garbled').mkdir()
    (tmp_path / 'garbled' / 'stats_adv.csv').write_text('epoch,train_loss\n1,0.5\nabc,1\n2\n')
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(lambda: plot_stats.main([str(tmp_path / 'garbled'), '-o', str(tmp_path / 'c.png')]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'column epoch holds text' in err, err
    assert not (tmp_path / 'c.png').exists()


def load_plot_stats():
    spec = importlib.util.spec_from_file_location('plot_stats', os.path.join(ROOT, 'plot_stats.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plot_cli(argv, capsys):
    try:
        exit_on_user_error(lambda: load_plot_stats().main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_cli_never_writes_over_inputs_or_files_and_picks_the_format(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path / 'run', 'trades-kl', KL_ROWS)
    csv_path = os.path.join(run, 'stats_adv.csv')
    csv_before = open(csv_path, 'rb').read()
    (tmp_path / 'old.png').write_bytes(b'mine')
    for out, message in [(csv_path, 'unknown figure format'), (os.path.join(run, 'args.txt'), 'unknown figure'),
                         (str(tmp_path / 'old.png'), 'exists already'), (str(tmp_path / 'c.jpg'), "'jpg'")]:
        code, err = plot_cli([run, '-o', out] + (['--force'] if 'format' in message else []), capsys)
        assert code == 2 and err.count('\n') == 1 and message in err and 'Traceback' not in err
    assert open(csv_path, 'rb').read() == csv_before and (tmp_path / 'old.png').read_bytes() == b'mine'
    os.rename(csv_path, os.path.join(run, 'stats.svg'))
    os.symlink('stats.svg', csv_path)  # an input reached under a figure suffix is still an input
    code, err = plot_cli([run, '-o', os.path.join(run, 'stats.svg'), '--force'], capsys)
    assert code == 2 and 'is an input' in err
    os.remove(csv_path)
    os.rename(os.path.join(run, 'stats.svg'), csv_path)
    assert plot_cli([run, '-o', str(tmp_path / 'new' / 'dir' / 'c.pdf')], capsys)[0] == 0
    assert (tmp_path / 'new' / 'dir' / 'c.pdf').read_bytes().startswith(b'%PDF')
    assert plot_cli([run, '-o', str(tmp_path / 'c.svg')], capsys)[0] == 0
    assert b'<svg' in (tmp_path / 'c.svg').read_bytes()
    assert plot_cli([run, '-o', str(tmp_path / 'old.png'), '--force'], capsys)[0] == 0
    assert (tmp_path / 'old.png').read_bytes().startswith(PNG_SIGNATURE)

    def read_only(path, write):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(plotting, 'write_atomic', read_only)
    code, err = plot_cli([run, '-o', str(tmp_path / 'ro.png')], capsys)
    assert code == 2 and err.count('\n') == 1 and 'cannot be written' in err and 'Traceback' not in err


def test_madry_run_without_train_clean_column(tmp_path):
    columns = [c for c in COLUMNS if c != 'train_clean_acc']
    rows = [[r[0]] + r[2:] for r in KL_ROWS]
    fig = plotting.draw_curves([plotting.read_run(write_run(tmp_path / 'm', 'madry', rows, columns))])
    assert list(lines_of(fig.axes[1])) == ['madry (adversarial)']


def test_run_curves_failure_is_a_warning(tmp_path, capsys):
    folder = write_run(tmp_path / 'a', 'trades-kl', KL_ROWS)
    assert plotting.write_run_curves(folder) == os.path.join(folder, 'curves.png')
    assert open(os.path.join(folder, 'curves.png'), 'rb').read(8) == PNG_SIGNATURE
    os.remove(os.path.join(folder, 'stats_adv.csv'))
    assert plotting.write_run_curves(folder) is None  # no exception
    err = capsys.readouterr().err
    assert err.startswith('warning: ') and err.count('\n') == 1
    with pytest.raises(UserError):
        plotting.read_run(folder)


def test_toy_demo_png_is_atomic_at_the_figure_resolution(tmp_path, monkeypatch):
    """plot_toy_demo.py writes through save_figure: the panel keeps its 8 x 6 in at 80 dpi = 640 x 480 pixels (the
    PNG header's width and height), and a save that fails half-way leaves the earlier PNG and no temporary file."""
    import matplotlib.figure
    import numpy as np

    import plot_toy_demo
    folder = tmp_path / 'PGDAT_KL'
    folder.mkdir()
    x = np.linspace(-5, 8, 14)[:, None]
    for name, values in (('x_test', x), ('y_test', np.full_like(x, 0.3)), ('pre_test', np.full_like(x, 0.5))):
        np.savetxt(folder / f'{name}.txt', values)
    png = tmp_path / 'panel.png'
    plot_toy_demo.plot_posterior(str(folder), str(png))
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert (int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')) == (640, 480)

    def fails_half_way(self, f, **kwargs):
        f.write(data[:100])
        raise OSError('No space left on device')
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', fails_half_way)
    with pytest.raises(OSError):
        plot_toy_demo.plot_posterior(str(folder), str(png))
    assert png.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ['PGDAT_KL', 'panel.png']

"""generate_toy_demo.py and core/toy/fast.py: divergences by hand, the reference's printed numbers, output files,
the fast path against plain autograd."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import generate_toy_demo as toy  # noqa: E402
from core.toy.fast import FastPath  # noqa: E402
from core.utils.errors import UserError, exit_on_user_error  # noqa: E402

PLAIN = toy.PlainAutograd()


def _fast(chunk):
    """core/toy/fast.py's strategy with blocks of `chunk` rows (None = one block)."""
    return FastPath(toy.bayes_logits, toy.divergence_per_sample, chunk=chunk)

P_MODEL = [[0.7, 0.3], [0.2, 0.8]]   # model rows
P_TARGET = [[0.6, 0.4], [0.5, 0.5]]   # target rows


def _kl(t, o):
    return sum(tk * math.log(tk / ok) for tk, ok in zip(t, o))


def _hand(div):
    rows = list(zip(P_MODEL, P_TARGET))
    if div == 'KL':       # KL(t || o), batch mean
        return (_kl(P_TARGET[0], P_MODEL[0]) + _kl(P_TARGET[1], P_MODEL[1])) / 2
    if div == 'JSsqrt':   # sqrt of the batch-mean JS divergence (as the reference; not the mean of per-row sqrt)
        js = []
        for o, t in rows:
            m = [(a + b) / 2 for a, b in zip(o, t)]
            js.append(0.5 * (_kl(o, m) + _kl(t, m)))
        return math.sqrt(sum(js) / 2)
    if div == 'LSE':
        return sum((a - b) ** 2 for o, t in rows for a, b in zip(o, t)) / 2
    if div == 'L2':
        return sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(o, t))) for o, t in rows) / 2
    if div == 'L1':
        return sum(abs(a - b) for o, t in rows for a, b in zip(o, t)) / 2
    if div == 'Linf':
        return sum(max(abs(a - b) for a, b in zip(o, t)) for o, t in rows) / 2


def test_hand_values_are_what_we_think():
    # A few of the 2x2 numbers written out, so the helper above is itself checked.
    assert _hand('L1') == pytest.approx((0.2 + 0.6) / 2)
    assert _hand('Linf') == pytest.approx((0.1 + 0.3) / 2)
    assert _hand('LSE') == pytest.approx((0.02 + 0.18) / 2)
    assert _hand('L2') == pytest.approx((math.sqrt(0.02) + math.sqrt(0.18)) / 2)
    assert _hand('KL') == pytest.approx((0.6 * math.log(0.6 / 0.7) + 0.4 * math.log(0.4 / 0.3)
                                         + 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)) / 2)


@pytest.mark.parametrize('div', toy.DIVERGENCES)
def test_distance_equals_hand_computation(div):
    o, t = torch.tensor(P_MODEL, dtype=torch.float64), torch.tensor(P_TARGET, dtype=torch.float64)
    assert toy.distance(o, t, div).item() == pytest.approx(_hand(div), rel=1e-12)


def test_distance_rejects_unknown_divergence():
    with pytest.raises(UserError):
        toy.distance(torch.tensor(P_MODEL), torch.tensor(P_TARGET), 'KLsqrt')


def test_ground_truth_is_the_bayes_posterior():
    x = torch.tensor([[0.0], [1.0], [-3.0]], dtype=torch.float64)
    p = toy.ground_truth(x)
    for i, xi in enumerate([0.0, 1.0, -3.0]):
        # prior 50000 : 10000, N(-1, 2) and N(1, 1) densities (the common 1/sqrt(2 pi) cancels)
        a = 50000 / 2.0 * math.exp(-(xi + 1) ** 2 / 8)
        b = 10000 / 1.0 * math.exp(-(xi - 1) ** 2 / 2)
        assert p[i, 0].item() == pytest.approx(a / (a + b), rel=1e-12)
        assert p[i, 1].item() == pytest.approx(b / (a + b), rel=1e-12)


@pytest.mark.parametrize('div', toy.DIVERGENCES)
@pytest.mark.parametrize('target', ['fixed', 'ground_truth', 'no_model'])
def test_blocked_input_gradient_has_the_sign_of_autograd(div, target):
    """The attack's hand-written, blocked backward ascends the same direction as autograd on `distance`."""
    torch.manual_seed(0)
    model = toy.build_model().double()
    x = torch.linspace(-4, 4, 50, dtype=torch.float64)[:, None]   # away from the saturated tails
    fixed = torch.softmax(torch.randn(50, 2, dtype=torch.float64), 1)
    xr = x.clone().requires_grad_()
    if target == 'fixed':
        loss, tgt, m = toy.distance(PLAIN.predict(model, xr), fixed, div), fixed, model
    elif target == 'ground_truth':
        loss, tgt, m = toy.distance(PLAIN.predict(model, xr), toy.ground_truth(xr), div), None, model
    else:
        loss, tgt, m = toy.distance(toy.ground_truth(xr), fixed, div), fixed, None
    expected = torch.autograd.grad(loss, xr)[0]
    got = _fast(16).input_grad(m, x, tgt, div)
    assert torch.equal(got.sign(), expected.sign())
    # the reference's gradient is the per-row one times a positive factor
    ratio = expected / got
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-6)


@pytest.mark.parametrize('attack', ['pgd', 'consistent', 'trades', 'C'])
def test_attack_stays_in_the_ball_and_leaves_parameters_alone(attack):
    torch.manual_seed(0)
    model = toy.build_model()
    x = toy.draw_samples(500, 100, 'cpu')
    if attack == 'pgd':
        delta = toy.pgd(_fast(128), model, x, toy.ground_truth(x), 'KL')
    elif attack == 'consistent':
        delta = toy.pgd(_fast(128), model, x, None, 'LSE')
    elif attack == 'trades':
        with torch.no_grad():
            delta = toy.pgd(_fast(128), model, x, _fast(128).predict(model, x), 'L1')
    else:
        delta = toy.pgd(_fast(None), None, x, toy.ground_truth(x), 'KL')
    assert delta.shape == x.shape and not delta.requires_grad
    assert delta.abs().max().item() <= toy.EPS
    assert all(p.grad is None for p in model.parameters())


def test_split_samples():
    assert toy.split_samples(60000) == (50000, 10000)
    assert toy.split_samples(600) == (500, 100)
    assert toy.split_samples(7) == (6, 1)


# The original implementation's printout on the CPU with the default seed 2 and 60000 samples: (Train loss,
# R_SCORE loss, R_Standard loss) of the first iterations (6 decimals) and C_L (None: not recorded).
REFERENCE = [
    ('PGDAT', 'KL', 'L1', [(0.243167, 0.488841, 0.380024), (0.187206, 0.392947, 0.288045),
                           (0.143012, 0.303531, 0.221383)], 0.0550979),
    ('PGDATconsistent', 'KL', 'KL', [(0.304100, 0.225415, 0.164896), (0.227411, 0.173597, 0.120839)], None),
    ('TRADES', 'LSE', 'L2', [(0.310666, 0.345522, 0.277885)], 0.0265446),
]


@pytest.mark.slow
@pytest.mark.parametrize('demo,div,div_c,expected,c_l', REFERENCE, ids=[r[0] for r in REFERENCE])
def test_first_iterations_match_the_reference(tmp_path, one_thread, demo, div, div_c, expected, c_l):
    lines = []
    res = toy.run(demo, div, div_c, iterations=len(expected), device='cpu', out=str(tmp_path), log=lines.append)
    got = list(zip(res['train_loss'], res['score_loss'], res['standard_loss']))
    for g_row, e_row in zip(got, expected):
        for g, e in zip(g_row, e_row):
            assert g == pytest.approx(e, rel=1e-4, abs=2e-6)   # the reference figures have 6 decimals
    # the printout: the reference's six lines per iteration, counted from 0, then C_L
    for ite, (train, score, standard) in enumerate(expected):
        block = lines[6 * ite:6 * ite + 6]
        assert block[0] == f'ite: {ite}' and block[5] == '***'
        for line, label, value in zip(block[1:5], ('Train loss', 'R_SCORE loss', 'R_Standard loss', 'diff'),
                                      (train, score, standard, score - standard)):
            name, number = line.split(': ')
            assert name == label and float(number) == pytest.approx(value, rel=1e-4, abs=4e-6)
    assert lines[-1].startswith('C_L: ')
    if c_l is not None:
        assert res['C_L'] == pytest.approx(c_l, rel=1e-5)


def test_printout_of_the_first_three_iterations(tmp_path):
    """`ite: 0`, `Train loss:`, `R_SCORE loss:`, `R_Standard loss:`, `diff:`, `***` per iteration (numbered from
    0, the values those of the records, diff = R_SCORE - R_Standard), then `C_L:` with a float32 value."""
    lines = []
    res = toy.run('PGDAT', 'KL', 'L1', iterations=3, samples=120, out=str(tmp_path), log=lines.append)
    assert len(lines) == 3 * 6 + 1
    for ite in range(3):
        score, standard = res['score_loss'][ite], res['standard_loss'][ite]
        assert lines[6 * ite:6 * ite + 6] == [
            f'ite: {ite}', f'Train loss: {res["train_loss"][ite]}', f'R_SCORE loss: {score}',
            f'R_Standard loss: {standard}', f'diff: {score - standard}', '***']
    assert lines[-1] == f'C_L: {res["C_L"]}'
    assert float(np.float32(res['C_L'])) == res['C_L']     # accumulated in a float32 tensor, as the reference
    compact = []
    toy.run('PGDAT', 'KL', 'L1', iterations=1, samples=120, out=str(tmp_path), log=compact.append, compact=True)
    assert compact[0].startswith('ite    0 | train loss ') and len(compact) == 2


def _rows(path):
    return np.loadtxt(path, ndmin=2)


@pytest.mark.parametrize('demo,div', [('PGDAT', 'JSsqrt'), ('TRADES', 'Linf'), ('Standard', 'L2')])
def test_output_files_and_shapes(tmp_path, demo, div):
    toy.main(['--demo', demo, '--divergence', div, '--divergence_C', 'L1', '--iterations', '2', '--samples', '120',
              '--save-every', '1', '--device', 'cpu', '--out', str(tmp_path / 'nested' / 'out'), '--no-progress'])
    folder = tmp_path / 'nested' / 'out' / f'{demo}_{div}'
    x, y, pre = _rows(folder / 'x_test.txt'), _rows(folder / 'y_test.txt'), _rows(folder / 'pre_test.txt')
    assert x.shape == (10000, 1) and y.shape == (10000, 2) and pre.shape == (10000, 2)
    assert x.min() >= -10 and x.max() <= 10
    np.testing.assert_allclose(y.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(pre.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(y, toy.ground_truth(torch.tensor(x, dtype=torch.float64)).numpy(), atol=1e-6)
    for name in ('train', 'SCORE', 'Standard'):
        rec = np.loadtxt(folder / f'record_{name}_loss.txt')
        assert rec.shape == (2,) and np.all(np.isfinite(rec)) and np.all(rec >= 0)
    for ite in (0, 1):                   # iterations are numbered from 0, as the reference's printout
        for name, cols in (('x_test', 1), ('y_test', 2), ('pre_test', 2)):
            assert _rows(folder / f'{name}_{ite}.txt').shape == (10000, cols)
    # savetxt defaults: '%.18e', space separated
    first = (folder / 'y_test.txt').read_text().splitlines()[0].split(' ')
    assert len(first) == 2 and all('e' in v and len(v.split('.')[1]) == 22 for v in first)


def test_snapshots_do_not_change_the_training_stream(tmp_path):
    kw = dict(demo='PGDAT', divergence='L2', divergence_C='KL', iterations=2, samples=120, out=str(tmp_path),
              log=lambda s: None)
    a = toy.run(save_every=0, **kw)
    x_a = np.loadtxt(os.path.join(a['folder'], 'x_test.txt'))
    b = toy.run(save_every=1, **kw)
    assert a['train_loss'] == b['train_loss'] and a['score_loss'] == b['score_loss']
    np.testing.assert_array_equal(x_a, np.loadtxt(os.path.join(b['folder'], 'x_test.txt')))


def test_bad_flags(tmp_path):
    with pytest.raises(SystemExit) as e:     # the reference's default 'PGDconsistent' is not a handled value
        toy.get_parser().parse_args(['--demo', 'PGDconsistent'])
    assert e.value.code == 2
    assert toy.get_parser().parse_args([]).demo == 'PGDATconsistent'
    with pytest.raises(UserError, match='--samples'):
        toy.run(samples=1, out=str(tmp_path))
    with pytest.raises(UserError, match='--save-every'):
        toy.run(save_every=-1, out=str(tmp_path))
    with pytest.raises(UserError, match='--seed -1'):          # np.random.seed would raise a ValueError
        toy.run(seed=-1, out=str(tmp_path))
    with pytest.raises(UserError, match='--iterations'):
        toy.run(iterations=0, out=str(tmp_path))
    assert not os.listdir(tmp_path)


def test_command_line(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'generate_toy_demo.py'), '--iterations', '1',
                           '--samples', '60', '--device', 'cpu', '--out', str(tmp_path), '--no-progress',
                           '--threads', '1'],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('ite: 0\nTrain loss: ') and '\n***\nC_L: ' in proc.stdout
    assert (tmp_path / 'PGDATconsistent_KL' / 'record_train_loss.txt').exists()
    bad = subprocess.run([sys.executable, os.path.join(ROOT, 'generate_toy_demo.py'), '--samples', '1', '--device',
                          'cpu', '--out', str(tmp_path)], capture_output=True, text=True, cwd=str(tmp_path),
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith('error: --samples')


def test_plot_toy_demo_draws_pngs(tmp_path, capsys):
    import plot_toy_demo
    folder = tmp_path / 'PGDAT_KL'
    folder.mkdir()
    x = np.linspace(-10, 10, 50)[:, None]
    y = toy.ground_truth(torch.tensor(x)).numpy()
    pre = np.full_like(y, 0.5)
    for suffix in ('', '_10'):
        np.savetxt(folder / f'x_test{suffix}.txt', x)
        np.savetxt(folder / f'y_test{suffix}.txt', y)
        np.savetxt(folder / f'pre_test{suffix}.txt', pre)
    for name in ('train', 'SCORE', 'Standard'):
        np.savetxt(folder / f'record_{name}_loss.txt', np.array([0.3, 0.2, 0.1]))
    assert plot_toy_demo.mean_abs_error(str(folder)) == pytest.approx(np.mean(np.abs(0.5 - y[:, 0])))
    plot_toy_demo.main([str(folder), '--ite', '10', '--out-dir', str(tmp_path / 'figs'),
                        '--grid', str(tmp_path / 'figs' / 'all.png')])
    for png in ('PGDAT_KL_10_posterior.png', 'PGDAT_KL_losses.png', 'all.png'):
        assert (tmp_path / 'figs' / png).read_bytes()[:4] == b'\x89PNG'
    # an existing PNG, a garbled record, a missing folder: one line, exit 2, the user's file kept
    (tmp_path / 'mine.png').write_bytes(b'mine')
    (tmp_path / 'garbled').mkdir()
    for name in ('x_test', 'y_test', 'pre_test'):
        (tmp_path / 'garbled' / f'{name}.txt').write_text('1 2 abc\n')
    for argv, says in (([str(folder), '--out-dir', str(tmp_path / 'new'), '--grid', str(tmp_path / 'mine.png')],
                        'mine.png exists already; pass --force'),
                       ([str(tmp_path / 'garbled'), '--out-dir', str(tmp_path / 'g')], 'is not a generate_toy_demo'),
                       ([str(tmp_path / 'missing')], 'is not a folder'),
                       ([str(folder), '--out-dir', str(tmp_path / 'mine.png' / 'x')], 'cannot be made')):
        with pytest.raises(SystemExit) as e:
            exit_on_user_error(lambda argv=argv: plot_toy_demo.main(argv))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1 and says in err, err
    assert (tmp_path / 'mine.png').read_bytes() == b'mine' and not (tmp_path / 'new').exists()   # nothing drawn
    plot_toy_demo.main([str(folder), '--out-dir', str(tmp_path / 'figs'), '--force'])


def test_attack_refuses_another_network():
    other = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 2))
    with pytest.raises(TypeError):
        toy.pgd(toy.strategy(), other, torch.zeros(4, 1), None, 'KL')


def test_blocked_toy_logits_equal_plain_autograd_values_and_gradients():
    """ToyLogits (blocks of 7 rows, hand-written backward) = the module under autograd, in float64."""
    torch.manual_seed(0)
    model = toy.build_model().double()
    x = torch.linspace(-4, 4, 23, dtype=torch.float64).reshape(-1, 1)
    target = toy.ground_truth(x).detach()
    grads = []
    for ops in (PLAIN, _fast(7)):
        model.zero_grad()
        p = ops.predict(model, x)
        loss = ((p - target) ** 2).sum(dim=1).mean()
        loss.backward()
        grads.append((p.detach().clone(), [q.grad.clone() for q in model.parameters()]))
    (p_plain, g_plain), (p_block, g_block) = grads
    assert torch.allclose(p_plain, p_block, rtol=0, atol=1e-12)
    for a, b in zip(g_plain, g_block):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('demo,div,div_c', [('PGDAT', 'KL', 'L1'), ('PGDATconsistent', 'JSsqrt', 'KL'),
                                            ('TRADES', 'LSE', 'L2'), ('Standard', 'L1', 'LSE')])
def test_plain_autograd_and_fast_path_give_the_same_losses(one_thread, demo, div, div_c):
    """Three Adam steps in float64 with the same random stream: the plain-autograd path (the module, autograd of
    the batch-mean distance) and core.toy.fast (blocks of 64 rows, hand-written backward, forward-mode input
    gradient) give the same training losses, R_SCORE, R_Standard and C-constant perturbations, to 1e-9 relative:
    their attacks take the same signed steps, only rounding differs."""
    records = []
    for ops in (PLAIN, _fast(64)):
        torch.manual_seed(0)
        model = toy.build_model().double()
        optimizer = torch.optim.Adam(model.parameters(), lr=toy.LR)
        x = toy.draw_samples(250, 50, 'cpu').double()
        rec = [toy.pgd(ops, None, x, ops.ground_truth(x).detach(), div)]
        for _ in range(3):
            x = toy.draw_samples(250, 50, 'cpu').double()
            optimizer.zero_grad()
            loss = toy.objective(ops, model, demo, x, div)
            loss.backward()
            optimizer.step()
            rec.append((loss.item(), *toy.robust_errors(ops, model, x, div_c)))
        records.append(rec)
    (c_plain, *plain_losses), (c_fast, *fast_losses) = records
    assert torch.equal(c_plain, c_fast)
    for p_row, f_row in zip(plain_losses, fast_losses):
        assert f_row == pytest.approx(p_row, rel=1e-9, abs=0)
    assert plain_losses[0] != plain_losses[-1]       # the model did train


def test_command_line_plain_autograd(tmp_path, one_thread):
    """--plain-autograd runs the same demo through the plain path: same files, the same losses up to float32
    rounding (the attacks take the same signed steps)."""
    kw = dict(demo='PGDATconsistent', divergence='KL', divergence_C='L1', iterations=2, samples=300,
              out=str(tmp_path / 'fast'), log=lambda s: None)
    fast = toy.run(**kw)
    toy.main(['--plain-autograd', '--iterations', '2', '--samples', '300', '--divergence_C', 'L1', '--device', 'cpu',
              '--out', str(tmp_path / 'plain'), '--no-progress'])
    plain = np.loadtxt(os.path.join(tmp_path, 'plain', 'PGDATconsistent_KL', 'record_train_loss.txt'))
    np.testing.assert_allclose(plain, fast['train_loss'], rtol=1e-5)


def test_existing_results_refused_or_moved_aside(tmp_path, capsys):
    folder = tmp_path / 'PGDAT_KL'
    folder.mkdir()
    (folder / 'record_train_loss.txt').write_text('earlier\n')
    argv = ['--demo', 'PGDAT', '--iterations', '1', '--samples', '120', '--device', 'cpu', '--out', str(tmp_path),
            '--no-progress', '--compact']
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(lambda: toy.main(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and '--overwrite' in err and 'Traceback' not in err
    assert os.listdir(folder) == ['record_train_loss.txt']
    toy.main(argv + ['--overwrite'])
    out = capsys.readouterr().out
    aside = [f for f in os.listdir(folder) if f.startswith('previous-')]
    assert len(aside) == 1 and f'moved to {folder / aside[0]}' in out
    assert (folder / aside[0] / 'record_train_loss.txt').read_text() == 'earlier\n'
    assert (folder / 'record_train_loss.txt').read_text() != 'earlier\n'

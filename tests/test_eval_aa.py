"""eval-aa.py end to end (docs/differences.md items 6, 10, 11, 23); the adapter alone: tests/test_autoattack.py.

A tiny WRN (wrn-16-1-swish) saved in the reference layout is evaluated offline on 8 synthetic images; AutoAttack's
APGD is cut to a few iterations by patching the package's constructor defaults, for the script and for the direct
package call alike, so both run exactly the default code path.
"""
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
from eval_aa_helpers import (
    N_IMAGES,
    ROOT,
    FakeOfficialAutoAttack,
    PixelModel,
    eval_aa,
    make_run,
    released_args,
    run_cli,
)

import core.attacks.autoattack as aa
from core.data import get_data_info
from core.models import create_model

FAST_ITERS = 4


class NotAStateDict:
    """Pickled as code: torch.load(weights_only=True) must refuse a checkpoint holding it."""


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


@pytest.fixture
def fast_apgd(monkeypatch):
    """APGD with FAST_ITERS iterations wherever the installed package constructs it (default path unchanged)."""
    module = sys.modules[aa._AutoAttack.__module__]

    def fast(cls):
        class Fast(cls):
            def __init__(self, *args, **kwargs):
                kwargs['n_iter'] = FAST_ITERS
                super().__init__(*args, **kwargs)
        return Fast

    monkeypatch.setattr(module, 'APGDAttack', fast(module.APGDAttack))
    monkeypatch.setattr(module, 'APGDAttack_targeted', fast(module.APGDAttack_targeted))



# ----------------------------------------------------------------------------------------------- end to end
def test_custom_matches_direct_autoattack_on_released_format(tmp_path, capsys, caplog, fast_apgd):
    """The authors' args.txt (cluster paths, cifar10s) evaluates with --data-dir; the numbers equal the package's."""
    data_root, log_root, desc, model, x, y = make_run(tmp_path, released_args(attack_eps=4 / 255))
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--version', 'custom']
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert 'Using WA model.' in out and out.rstrip().endswith('Script Completed.')
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['n'] == N_IMAGES and result['norm'] == 'Linf' and result['version'] == 'custom'
    assert result['seconds'] > 0 and result['images_per_s'] == pytest.approx(N_IMAGES / result['seconds'], rel=1e-3)
    assert result['eps'] == pytest.approx(4 / 255) and result['seed'] == 1 and result['split'] == 'test'
    assert result['data_dir'] == os.path.join(data_root, 'cifar10')
    assert result['clean_accuracy'] == (N_IMAGES - 2) / N_IMAGES
    assert list(result['robust_accuracy_after']) == ['apgd-ce', 'apgd-t']
    log = (tmp_path / 'logs' / desc / 'log-aa.log').read_text()
    assert 'running apgd-ce' in log and 'Script Completed.' in log
    assert not [f for f in os.listdir(tmp_path / 'logs' / desc) if f.startswith('eval-aa-state')]

    # The package called directly on the same model, images and seed (pyautoattack's or the official API).
    torch.manual_seed(1)
    if aa.BACKEND == 'pyautoattack':
        adversary = aa._AutoAttack(model, attacks=['apgd-ce', 'apgd-t'], device='cpu', eps=4 / 255, norm='Linf',
                                   seed=1, version='custom')
    else:
        adversary = aa._AutoAttack(model, norm='Linf', eps=4 / 255, seed=1, version='custom', device='cpu',
                                   attacks_to_run=['apgd-ce', 'apgd-t'])
    adversary.apgd.n_restarts = 1
    adversary.apgd_targeted.n_restarts = 1
    caplog.set_level(logging.DEBUG, logger='auto-attack')
    with torch.no_grad():
        if aa.BACKEND == 'pyautoattack':
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=128)
        else:
            x_adv = adversary.run_standard_evaluation(x, y, bs=128)
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert result['robust_accuracy'] == robust
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    if aa.BACKEND == 'pyautoattack':  # the per-attack numbers the package logs (as rounded percentages)
        logged = dict(re.findall(r'robust accuracy after (\S+): ([\d.]+)%', caplog.text))
        assert logged, caplog.text
        for attack, percent in logged.items():
            assert f'{100 * result["robust_accuracy_after"][attack.lower()]:.2f}' == percent
    # the fixture makes both attacks matter: apgd-ce fools some points, apgd-t more, some stay robust
    after = result['robust_accuracy_after']
    assert result['clean_accuracy'] > after['apgd-ce'] > after['apgd-t'] == result['robust_accuracy'] > 0


def test_released_args_without_data_dir_names_the_cluster_path(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    code, _, err = run_cli(['--log-dir', log_root, '--desc', desc, '--version', 'custom'], capsys)
    assert code == 2
    assert err.count('\n') == 1 and '/cluster/home/rarade/data/' in err and '--data-dir' in err


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.slow  # a subprocess: imports torch again
def test_missing_args_txt_exit_2_with_path(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'eval-aa.py'), '--log-dir', str(tmp_path),
                           '--desc', 'nothing'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count('\n') == 1 and os.path.join(str(tmp_path), 'nothing', 'args.txt') in proc.stderr


def test_missing_weights_exit_2_with_paths(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    os.remove(os.path.join(log_root, desc, 'weights-best.pt'))
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and os.path.join(log_root, desc, 'weights-best.pt') in err
    other = str(tmp_path / 'elsewhere.pt')
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--weights', other], capsys)
    assert code == 2 and other in err


@pytest.mark.parametrize('change, eps, says', [('seed', 8 / 255, '--seed -1'), ('eps', -1.0, 'attack_eps'),
                                               ('eps', float('nan'), 'attack_eps'),
                                               ('eps', 8.0, 'did you mean 8/255?')])
def test_bad_numbers_exit_2_nothing_written(tmp_path, capsys, change, eps, says):
    # a radius saved in pixel units (8 for L-inf on [0, 1] images) gets the same hint as train-wa.py's flag
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack_eps=eps))
    before = sorted(os.listdir(os.path.join(log_root, desc)))
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc] + (['--seed', '-1'] if change == 'seed'
                                                                                else [])
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count('\n') == 1
    assert says in err and 'Traceback' not in err
    assert sorted(os.listdir(os.path.join(log_root, desc))) == before   # no log-aa.log


def test_truncated_checkpoint_is_named_corrupt(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    path = os.path.join(log_root, desc, 'weights-best.pt')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and f'{path} is corrupt or truncated' in err and 'pickled' not in err


def test_pickled_code_is_refused(tmp_path, capsys):
    info = get_data_info('cifar10')
    sd = create_model('wrn-16-1-swish', False, info, 'cpu').state_dict()
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(),
                                             checkpoint={'model_state_dict': sd, 'payload': NotAStateDict()})
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and 'refused' in err and 'NotAStateDict' in err


def test_unaveraged_weights_missing_exit_2(tmp_path, capsys):
    """--unaveraged on a checkpoint without them (a run without weight averaging) names the file and the fix."""
    sd = create_model('wrn-16-1-swish', False, get_data_info('cifar10'), 'cpu').state_dict()
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(), checkpoint={'model_state_dict': sd})
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--unaveraged'], capsys)
    assert code == 2 and err.count('\n') == 1 and 'weights-best.pt' in err and 'drop --unaveraged' in err


def test_architecture_mismatch_and_unknown_model_exit_2(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    args_path = os.path.join(log_root, desc, 'args.txt')
    with open(args_path, 'w') as f:
        json.dump(released_args(model='wrn-22-1-swish'), f)
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and 'wrn-22-1-swish' in err
    assert '--model' not in err and '--weights' in err  # eval-aa.py has no --model flag
    assert not os.path.exists(os.path.join(log_root, desc, 'log-aa.log'))  # validated before the log is opened
    with open(args_path, 'w') as f:
        json.dump(released_args(model='vgg16'), f)
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and 'vgg16' in err


# ----------------------------------------------------------------------------------------------- arguments
def test_explicit_flags_override_args_txt(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'args.txt').write_text(json.dumps(released_args(batch_size=1024, seed=7)))
    args, folder, _ = eval_aa.resolve_args(['--log-dir', str(tmp_path), '--desc', 'run'])
    assert folder == str(run_dir)
    assert args.data_dir == '/cluster/home/rarade/data/' and args.seed == 7  # as the reference, when not given
    assert args.batch_size == 128 and args.num_samples is None  # eval's own flags never come from args.txt
    assert args.model == 'wrn-16-1-swish' and args.data == 'cifar10s'
    args, _, _ = eval_aa.resolve_args(['--log-dir', str(tmp_path), '--desc', 'run', '--data-dir', 'D', '--seed', '1'])
    assert args.data_dir == 'D' and args.seed == 1


def test_device_has_the_choices_of_train_wa(capsys):
    """One --device for every script: eval-aa.py refuses what train-wa.py refuses (exit 2 before anything runs)."""
    from core.run.parser import parser_eval, parser_train

    def choices(parser):
        return next(a.choices for a in parser._actions if a.dest == 'device')
    assert tuple(choices(parser_eval())) == tuple(choices(parser_train())) == ('auto', 'cpu', 'cuda')
    for bad in ('cuda:1', 'gpu'):
        with pytest.raises(SystemExit) as e:
            parser_eval().parse_args(['--device', bad])
        assert e.value.code == 2 and f"invalid choice: '{bad}'" in capsys.readouterr().err


@pytest.mark.parametrize('data, folder', [('cifar10s', 'cifar10'), ('cifar10', 'cifar10'), ('cifar100s', 'cifar100'),
                                          ('svhns', 'svhn'), ('tiny-imagenet', 'tiny-imagenet')])
def test_data_folder(data, folder):
    assert eval_aa.data_folder(data) == folder


@pytest.mark.parametrize('attack, norm', [('linf-apgd', 'Linf'), ('fgsm', 'Linf'), ('l2-pgd', 'L2'), ('fgm', 'L2')])
def test_norm_rule_end_to_end(tmp_path, capsys, monkeypatch, attack, norm):
    """docs/differences.md item 23 fixed: every L-inf attack (linf-apgd included) is evaluated in L-inf."""
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack=attack, attack_eps=0.5, seed=5))
    code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '3',
                              '--batch-size', '2', '--unaveraged'], capsys)
    assert code == 0, err
    kwargs = FakeOfficialAutoAttack.created[-1].kwargs
    assert kwargs['norm'] == norm and kwargs['eps'] == 0.5 and kwargs['seed'] == 5 and kwargs['version'] == 'standard'
    assert kwargs['device'] == torch.device('cpu')
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['n'] == 3 and result['norm'] == norm and result['state_dict'] == 'unaveraged_model_state_dict'
    assert result['backend'] == 'autoattack' and len(result['checkpoint_sha256']) == 64


def test_log_is_appended_not_truncated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    log_path = tmp_path / 'logs' / desc / 'log-aa.log'
    log_path.write_text('an earlier evaluation\n')
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2'],
                           capsys)
    assert code == 0, err
    text = log_path.read_text()
    assert text.startswith('an earlier evaluation\n') and text.rstrip().endswith('Script Completed.')


# ----------------------------------------------------------------------------------------------- several processes
@pytest.mark.ddp
@pytest.mark.skipif(aa.BACKEND is None, reason='no AutoAttack package')
def test_two_gloo_processes_equal_one_and_resume_its_state(tmp_path, capsys, monkeypatch):
    """torchrun --nproc_per_node 2 eval-aa.py: the same robust accuracy and per-image flags as one process; and an
    evaluation interrupted in one process resumes in two from its state file, again with the same result."""
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack_eps=4 / 255))
    run_dir = tmp_path / 'logs' / desc
    # batch size 1: one process attacks chunks of 10 points, two processes 5 each (two chunks per round)
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--version', 'custom', '--n-iter', '4',
            '--batch-size', '1', '--device', 'cpu']
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    single = json.loads((run_dir / 'eval-aa.json').read_text())
    assert single['processes'] == 1 and len(single['per_image']['robust']) == N_IMAGES
    assert single['counts']['clean'] > single['counts']['robust'] > 0  # the attack fools some points, not all

    # interrupt a single-process evaluation after its first package call: its state file stays behind
    calls = []

    def interrupted(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args)

    original = aa._attack_subset
    monkeypatch.setattr(aa, '_attack_subset', interrupted)
    with pytest.raises(KeyboardInterrupt):
        eval_aa.main(argv)
    monkeypatch.undo()
    assert [f for f in os.listdir(run_dir) if f.startswith('eval-aa-state')]

    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    env.pop('WORLD_SIZE', None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           os.path.join(ROOT, 'eval-aa.py')] + argv
    for resumed in (True, False):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        double = json.loads((run_dir / 'eval-aa.json').read_text())
        assert double['processes'] == 2 and double['resumed'] is resumed
        for key in ('robust_accuracy', 'robust_accuracy_after', 'counts', 'clean_accuracy'):
            assert double[key] == single[key], key
        assert double['per_image']['robust'] == single['per_image']['robust']
        if not resumed:
            assert double['per_image']['clean'] == single['per_image']['clean']
        assert not [f for f in os.listdir(run_dir) if f.startswith('eval-aa-state')]
        assert proc.stdout.count('Script Completed.') == 1  # only the first process logs
    log = (run_dir / 'log-aa.log').read_text()
    assert log.count('Script Completed.') == 3 and 'x 2 processes' in log


def test_weights_from_a_safetensors_export(tmp_path, capsys, monkeypatch):
    """eval-aa.py --weights reads a .safetensors export of scripts/export.py (one model: --unaveraged refused)."""
    pytest.importorskip('safetensors')  # optional; requirements.txt installs it
    from core.run.export import export_weights
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    out = str(tmp_path / 'wa.safetensors')
    export_weights(os.path.join(log_root, desc), out)
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '4', '--weights', out]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['checkpoint'] == out and result['clean_accuracy'] == 0.5  # images 0, 1 are mislabelled
    assert result['per_image']['clean'] == '0011'
    code, _, err = run_cli(argv + ['--unaveraged'], capsys)
    assert code == 2 and '--unaveraged' in err and err.count('\n') == 1


def test_json_files_written_atomically_with_the_usual_permissions(tmp_path, capsys, monkeypatch):
    """eval-aa.json and the AutoAttack state file: 0666 minus the umask (not mkstemp's 0600), no temporary file left,
    eval-aa.json indented by 2 with a final newline, the state file one compact JSON line."""
    import stat
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    umask = os.umask(0o027)
    try:
        code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2'],
                               capsys)
        x = torch.zeros(4, 3, 2, 2)
        state_path = tmp_path / 'state.json'
        aa.run_autoattack(aa.make_autoattack(PixelModel(), 'Linf', 0.5, version='custom', seed=3), x,
                          torch.zeros(4, dtype=torch.long), bs=2, state_path=str(state_path), progress=False)
    finally:
        os.umask(umask)
    assert code == 0, err
    path = tmp_path / 'logs' / desc / 'eval-aa.json'
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + '\n'
    state = state_path.read_text()
    assert state == json.dumps(json.loads(state)) and json.loads(state)['format'] == aa.STATE_FORMAT
    for p in (path, state_path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path / 'logs' / desc)) == ['args.txt', 'eval-aa.json', 'eval-aa.jsonl',
                                                          'log-aa.log', 'weights-best.pt']
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


# ----------------------------------------------------------------------------------------------- nothing silent
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_weights_refused_before_any_attack(tmp_path, capsys, bad):
    sd = create_model('wrn-16-1-swish', False, get_data_info('cifar10'), 'cpu').state_dict()
    name = [k for k, v in sd.items() if v.is_floating_point()][3]
    sd[name].view(-1)[0] = bad
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(), checkpoint={'model_state_dict': sd})
    before = sorted(os.listdir(os.path.join(log_root, desc)))
    code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and name in err and 'NaN or inf' in err and 'Traceback' not in err
    assert sorted(os.listdir(os.path.join(log_root, desc))) == before and 'AutoAttack' not in out


def test_history_appended_and_out_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2']
    for n in ('2', '3'):
        code, _, err = run_cli(argv + ['--num-samples', n], capsys)
        assert code == 0, err
    run_dir = tmp_path / 'logs' / desc
    history = [json.loads(line) for line in (run_dir / 'eval-aa.jsonl').read_text().splitlines()]
    assert [h['n'] for h in history] == [2, 3] and json.loads((run_dir / 'eval-aa.json').read_text()) == history[-1]
    before = sorted(os.listdir(run_dir))
    out = tmp_path / 'elsewhere' / 'aa'
    code, _, err = run_cli(argv + ['--out-dir', str(out)], capsys)
    assert code == 0, err
    assert sorted(os.listdir(run_dir)) == before
    assert sorted(os.listdir(out)) == ['eval-aa.json', 'eval-aa.jsonl', 'log-aa.log']


@pytest.mark.parametrize('real', [False, True])
def test_read_only_run_folder_names_out_dir(tmp_path, capsys, monkeypatch, real):
    """A released run on a read-only share: one line naming the folder and --out-dir, nothing attacked."""
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    run_dir = os.path.join(log_root, desc)
    if real:
        if os.geteuid() == 0:
            pytest.skip('root ignores permission bits; the patched variant covers it')
        os.chmod(run_dir, 0o555)
    else:
        real_open = os.open

        def read_only_open(path, flags, *a, **k):   # what a read-only share answers (root ignores the mode bits)
            if flags & (os.O_WRONLY | os.O_RDWR) and os.path.dirname(os.fspath(path)) == run_dir:
                raise PermissionError(13, 'Permission denied', path)
            return real_open(path, flags, *a, **k)
        monkeypatch.setattr(os, 'open', read_only_open)
    try:
        code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    finally:
        os.chmod(run_dir, 0o755)
    assert code == 2 and err.count('\n') == 1 and run_dir in err and '--out-dir' in err and 'Traceback' not in err
    assert sorted(os.listdir(run_dir)) == ['args.txt', 'weights-best.pt']


def test_an_output_folder_held_by_a_live_process_is_refused(tmp_path, capsys, monkeypatch):
    """Two evaluations (or an evaluation and the training run) in one folder: one line naming the holder and
    --out-dir; the holder's lock is left alone and nothing is written."""
    import socket
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    run_dir = os.path.join(log_root, desc)
    lock = os.path.join(run_dir, '.lock')
    with open(lock, 'w') as f:
        f.write(f'{os.getpid()} {socket.gethostname()}\n')
    code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and f'in use by process {os.getpid()}' in err and '--out-dir' in err
    assert sorted(os.listdir(run_dir)) == ['.lock', 'args.txt', 'weights-best.pt'] and 'AutoAttack' not in out
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    out_dir = str(tmp_path / 'elsewhere')
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2',
                            '--out-dir', out_dir], capsys)
    assert code == 0, err
    assert os.path.isfile(lock) and not os.path.exists(os.path.join(out_dir, '.lock'))   # released at the end

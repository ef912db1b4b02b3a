"""train-wa.py when things go wrong, end to end on a tiny WRN-Swish and synthetic data (helpers in train_helpers.py):
bad numeric flags (one line, exit 2, nothing written), a non-finite loss (stop, the last epoch kept, resume with
another --lr), SIGKILL at any write and a bit-identical resume, the temporary files a resume removes, the bytes of
stats_adv.csv and args.txt, the negative --unsup-fraction, the DataParallel note, TensorBoard."""
import json
import math
import os
import re
import runpy
import signal
import sys

import pytest
import torch
from train_helpers import CSV_COLUMNS, SCRIPT, assert_same_weights, load, make_data_dir, read_csv, run, tiny_args

from core.run.parser import check_radius, parser_train
from core.utils import faults
from core.utils.errors import UserError


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory)


BAD_NUMBERS = [('--attack-eps', '-1'), ('--attack-eps', 'nan'), ('--attack-step', '0'), ('--attack-iter', '0'),
               ('--lr', 'nan'), ('--lr', '0'), ('--lr', 'inf'), ('--lr', '1e300'), ('--weight-decay', '1e300'),
               ('--weight-decay', '-0.0001'), ('--beta', '-1'),
               ('--beta', 'nan'), ('--clip_value', '-0.5'), ('--ls', '1'), ('--ls', '-0.1'), ('--tau', '1'),
               ('--tau', '-0.5'), ('--clip-grad', '0'), ('--seed', '-1'), ('--unsup-fraction', 'nan'),
               ('--stop-after', '0')]


@pytest.mark.parametrize('flag,value', BAD_NUMBERS, ids=[f'{f}={v}' for f, v in BAD_NUMBERS])
def test_bad_numeric_flag_one_line_exit_2_nothing_written(data_dir, tmp_path, capsys, flag, value):
    """Each numeric flag out of range: one line naming the flag, exit 2, no run folder (not even the log root)."""
    log_dir = tmp_path / 'logs'
    assert run(tiny_args(data_dir, log_dir, 'x', flag, value)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {flag} ') and err.count('\n') == 1, err
    assert not log_dir.exists()


@pytest.mark.parametrize('flags, hint', [
    (['--attack-eps', '8'], '--attack-eps 8: an L-inf radius or step above 1 covers the whole image range [0, 1] '
                            '(images are in [0, 1]); did you mean 8/255?'),
    (['--attack-step', '2'], 'did you mean 2/255?'),
    (['--attack-eps', '8/0'], "argument --attack-eps: '8/0': the divisor is 0 (e.g. 8/255)."),  # argparse's usage first
])
def test_a_radius_in_pixel_units_or_a_zero_divisor_gets_one_line(data_dir, tmp_path, capsys, flags, hint):
    log_dir = tmp_path / 'logs'
    assert run(tiny_args(data_dir, log_dir, 'x', *flags)) == 2
    err = capsys.readouterr().err
    assert hint in err.strip().splitlines()[-1] and 'Traceback' not in err, err
    assert '/0' in flags[1] or err.count('\n') == 1
    assert not log_dir.exists()


def test_an_l2_radius_above_1_is_a_radius():
    args = parser_train().parse_args(['--desc', 'x', '--attack', 'l2-pgd', '--attack-eps', '2.0'])
    assert check_radius('--attack-eps', args.attack_eps, False, '0.5') == 2.0
    with pytest.raises(UserError, match='did you mean 2/255'):
        check_radius('--attack-eps', args.attack_eps, True, '8/255')


def test_non_finite_loss_stops_keeps_the_last_epoch_and_resumes_with_another_lr(data_dir, tmp_path, capsys):
    """A loss that blows up stops the run (one line: epoch, batch), the files of epoch 1 stay byte-identical, and
    --resume --resume-changed-flags lr --lr X continues with the schedule of X (OneCycleLR written out by hand)."""
    argv = tiny_args(data_dir, tmp_path, 'nan', '--num-adv-epochs', '3', '--lr', '0.1', data='cifar10')
    assert run(argv + ['--stop-after', '1']) == 0
    run_dir = tmp_path / 'nan'
    names = ('weights-best.pt', 'weights-last.pt', 'stats_adv.csv', 'state-last.pt', 'args.txt')
    kept = {n: (run_dir / n).read_bytes() for n in names}
    capsys.readouterr()
    assert run(argv + ['--resume', '--lr', '1e30']) == 2                     # not on purpose: refused, with the fix
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'for lr' in err and '--resume-changed-flags lr' in err
    assert run(argv + ['--resume', '--resume-changed-flags', 'lr', '--lr', '1e30']) == 2
    err = capsys.readouterr().err.split('\r')[-1]                           # after the (cleared) progress bar
    assert err.count('\n') == 1 and re.match(r'error: epoch 2, batch [1-4] of 4: the training loss is (nan|inf) ', err)
    assert 'still holds epoch 1' in err and '--resume --resume-changed-flags lr' in err
    assert {n: (run_dir / n).read_bytes() for n in names} == kept
    assert 'epoch 2, batch' in (run_dir / 'log-train.log').read_text()
    assert run(argv + ['--resume', '--resume-changed-flags', 'lr', '--lr', '0.05']) == 0
    lrs = [float(r[CSV_COLUMNS.index('lr') - 1]) for r in read_csv(run_dir / 'stats_adv.csv')[1:]]
    assert json.loads((run_dir / 'args.txt').read_text())['lr'] == 0.05 == load(run_dir / 'state-last.pt')['args']['lr']

    def one_cycle(max_lr, step, total=3):        # cosinew: OneCycleLR(pct_start 0.025), annealing phase
        start = 0.025 * total - 1
        low = max_lr / 25 / 1e4
        return low + (max_lr - low) / 2 * (1 + math.cos(math.pi * (step - start) / (total - 1 - start)))
    assert lrs[0] == pytest.approx(one_cycle(0.1, 0), rel=1e-12)
    assert lrs[1:] == pytest.approx([one_cycle(0.05, 1), one_cycle(0.05, 2)], rel=1e-12)


def run_killed(argv, fault):
    """Run train-wa.py in a forked child with SCORE_AT_FAULT=fault; assert that it SIGKILLed itself there."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, whatever happens
        code = 98
        try:
            os.environ['SCORE_AT_FAULT'] = fault
            code = run(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (fault, status)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_killed_at_any_point_resume_ends_bit_identical(data_dir, tmp_path, one_thread):
    """SIGKILL (no cleanup) in the middle of a file write, in the middle of an epoch and between two writes:
    each --resume continues from the last state-last.pt (the commit point; before the first one, from epoch 1)
    and the run ends with the weights and the CSV of the uninterrupted run."""
    flags = ('--beta', '5', '--adv-eval-freq', '1')
    assert run(tiny_args(data_dir, tmp_path, 'full', *flags, data='cifar10')) == 0
    argv = tiny_args(data_dir, tmp_path, 'killed', *flags, data='cifar10')
    run_killed(argv, 'mid-write:weights-last.pt:1')      # epoch 1 not committed: weights-best.pt + a temp file
    run_dir = tmp_path / 'killed'
    assert not (run_dir / 'state-last.pt').exists() and any(n.endswith('.tmp') for n in os.listdir(run_dir))
    resume = argv + ['--resume']
    run_killed(resume, 'train-batch:2:2')               # restarted at epoch 1, committed it, killed in epoch 2
    assert load(run_dir / 'state-last.pt')['epoch'] == 1
    run_killed(resume, 'after-write:stats_adv.csv:2')   # epoch 2's weights and CSV written, its state not
    assert len(read_csv(run_dir / 'stats_adv.csv')) == 3 and load(run_dir / 'state-last.pt')['epoch'] == 1
    run_killed(resume, 'mid-write:state-last.pt:2')     # the state of epoch 2 written to a temp file only
    assert run(resume) == 0
    for name in ('weights-last.pt', 'weights-best.pt'):
        assert_same_weights(load(tmp_path / 'full' / name), load(run_dir / name))
    assert read_csv(tmp_path / 'full' / 'stats_adv.csv', reproducible=True) == read_csv(run_dir / 'stats_adv.csv',
                                                                               reproducible=True)
    assert load(run_dir / 'state-last.pt')['epoch'] == 2
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(tmp_path / 'full'))   # no temp file left


def test_the_command_that_continues_drops_overwrite_and_resume_from():
    from core.run.epoch import resume_command
    assert resume_command(['train-wa.py', '--overwrite', '--resume-from', 'state-prev.pt', '--lr', '0.1']) == \
        'python train-wa.py --lr 0.1 --resume'
    assert resume_command(['train-wa.py', '--resume', '--resume-from=state-prev.pt']) == 'python train-wa.py --resume'


def test_stale_temp_files_are_exactly_the_temporary_files_of_write_atomic(tmp_path):
    """A killed write_atomic leaves `.<name>.XXXXXXXX.tmp` (mkstemp's 8 characters): --resume removes those of the
    run's files, and nothing else (not a user's file, not another target's temporary file)."""
    from core.run.run_dir import RUN_FILES, STALE_TEMP_FILES, remove_stale_temp_files
    from core.utils.atomic import write_atomic
    temp_names = []

    def record_temp_name(f):
        temp_names.extend(n for n in os.listdir(tmp_path) if n.endswith('.tmp'))
    for name in RUN_FILES:
        write_atomic(tmp_path / name, record_temp_name)
    assert len(temp_names) == len(RUN_FILES) == 7
    assert all(STALE_TEMP_FILES.match(n) for n in temp_names), temp_names
    kept = ['stats_adv.csv', 'notes.tmp', 'stats_adv.csv.tmp', '.args.txt.tmp', '.args.txt.abcdefg.tmp',
            '.args.txt.abcdefghi.tmp', '.other.pt.abcdefgh.tmp', 'args.txt.abcdefgh.tmp', '.args.txt.ABCDEFGH.tmp']
    stale = ['.args.txt.abcdefgh.tmp', '.state-last.pt.a1_b2c3d.tmp', '.curves.png.00000000.tmp']
    folder = tmp_path / 'run'
    folder.mkdir()
    for name in kept + stale:
        (folder / name).write_bytes(b'')
    assert remove_stale_temp_files(folder) == sorted(stale)
    assert sorted(os.listdir(folder)) == sorted(kept)


def test_csv_and_args_bytes(tmp_path):
    """stats_adv.csv: pandas' CSV (header, no index, empty cell for ''); args.txt: JSON with indent 4."""
    import argparse

    from core.run.epoch import write_csv
    from core.run.run_dir import write_args
    rows = [{'epoch': 1, 'lr': 0.5, 'test_adversarial_acc': ''}, {'epoch': 2, 'lr': 0.25, 'test_adversarial_acc': 1.0}]
    write_csv(rows, str(tmp_path / 'stats_adv.csv'))
    assert (tmp_path / 'stats_adv.csv').read_bytes() == b'epoch,lr,test_adversarial_acc\n1,0.5,\n2,0.25,1.0\n'
    write_args(argparse.Namespace(desc='x', lr=0.1, resume_changed_flags=[]), str(tmp_path))
    assert (tmp_path / 'args.txt').read_bytes() == (b'{\n    "desc": "x",\n    "lr": 0.1,\n'
                                                   b'    "resume_changed_flags": []\n}')
    assert sorted(os.listdir(tmp_path)) == ['args.txt', 'stats_adv.csv']


def test_negative_unsup_fraction_passes_the_flag_checks(data_dir, tmp_path):
    """--unsup-fraction -1 (one merged pool, the sampler's test in test_data.py) is no longer refused."""
    from core.run.parser import check_train_flags as validate
    from core.run.parser import parser_train
    validate(parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--unsup-fraction', '-1')))
    args = parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--resume-changed-flags', 'lr'))
    with pytest.raises(Exception, match='add --resume'):
        validate(args)
    args = parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--resume', '--resume-changed-flags', 'beta'))
    with pytest.raises(Exception, match='only lr, data may change'):
        validate(args)


def test_dataparallel_note_only_for_one_process_on_several_gpus():
    from core.utils.distributed import Runtime
    note = runpy.run_path(SCRIPT)['dataparallel_note']
    cuda = torch.device('cuda')
    assert note(Runtime(device=cuda), 4) == (
        'Note: 4 GPUs are visible but this run uses one; the reference wrapped the model in DataParallel over all '
        'of them (BatchNorm statistics per batch/4 images): `torchrun --nproc_per_node 4 train-wa.py ...` '
        'reproduces that.')
    assert note(Runtime(device=cuda), 1) is None                            # one GPU: nothing to say
    assert note(Runtime(device=cuda, rank=0, world_size=4), 4) is None      # already under torchrun
    assert note(Runtime(device=torch.device('cpu')), 0) is None


def tensorboard_scalars(folder):
    """{tag: [(step, value), ...]} of every event file in `folder` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


def test_tensorboard_steps_and_resume(data_dir, tmp_path, one_thread):
    """--tensorboard: per-step train scalars at steps 1..2L (L batches per epoch), per-epoch ones at L and 2L, with
    a stop after epoch 1 and a resume continuing the same curves."""
    pytest.importorskip('tensorboard')  # optional; requirements.txt installs it
    argv = tiny_args(data_dir, tmp_path, 'tb', '--beta', '5', '--adv-eval-freq', '2', '--tensorboard', data='cifar10')
    assert run(argv + ['--stop-after', '1']) == 0
    assert run(argv + ['--resume']) == 0
    scalars = tensorboard_scalars(tmp_path / 'tb' / 'tensorboard')
    header, *rows = read_csv(tmp_path / 'tb' / 'stats_adv.csv')
    steps = 4  # 80 training images - 16 for validation = 64 = 4 batches of 16 per epoch
    assert [s for s, _ in scalars['train/loss']] == list(range(1, 2 * steps + 1))  # each step once, in order
    assert {'train/loss', 'train/clean_acc', 'train/adversarial_acc', 'train/lr'} <= set(scalars)
    for column in ('train_loss', 'lr', 'test_clean_acc', 'eval_adversarial_acc'):
        assert [s for s, _ in scalars[f'epoch/{column}']] == [steps, 2 * steps]
        assert [v for _, v in scalars[f'epoch/{column}']] == pytest.approx([float(r[header.index(column)])
                                                                            for r in rows])
    assert [s for s, _ in scalars['epoch/test_adversarial_acc']] == [2 * steps]  # attacked at epoch 2 only
    # the per-epoch train loss is the mean of the per-step losses
    losses = [v for _, v in scalars['train/loss']]
    assert scalars['epoch/train_loss'][0][1] == pytest.approx(sum(losses[:steps]) / steps, rel=1e-6)
    assert scalars['train/lr'][0][1] == pytest.approx(float(rows[0][header.index('lr')]))


def test_tensorboard_missing_is_one_line_before_anything_is_written(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)  # as if the package were not installed
    assert run(tiny_args(data_dir, tmp_path, 'tb', '--tensorboard', data='cifar10')) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'pip install tensorboard' in err
    assert not (tmp_path / 'tb').exists()


def run_signalled(argv, at, signum):
    """Run train-wa.py in a forked child that sends itself `signum` right after the optimizer step of batch `at`
    = (epoch, batch), as a scheduler would; returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, whatever happens
        code = 98
        try:
            import core.training.trainer as trainer_module

            def fault_point(name, batch=None, _at=(at[0], at[1])):
                if name == 'train-batch' and (faults._epoch, batch) == _at:
                    os.kill(os.getpid(), signum)
            trainer_module.fault_point = fault_point
            code = run(argv)
        finally:
            os._exit(code if isinstance(code, int) else 97)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    return os.WEXITSTATUS(status)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_preempted_mid_epoch_by_a_signal_saves_and_resumes_bit_identical(data_dir, tmp_path, one_thread, capfd):
    """SIGUSR1 (Slurm's warning), Ctrl-C and SIGTERM in the middle of epochs: the step in progress finishes, the
    state is saved mid-epoch, one line says where and how to continue, the exit code is 128 + the signal; each
    --resume continues at the next batch and the run ends with the uninterrupted run's weights and CSV."""
    flags = ('--beta', '5', '--adv-eval-freq', '1')
    assert run(tiny_args(data_dir, tmp_path, 'full', *flags, data='cifar10')) == 0
    argv = tiny_args(data_dir, tmp_path, 'stopped', *flags, data='cifar10')
    run_dir = tmp_path / 'stopped'
    capfd.readouterr()
    resume = argv + ['--resume']
    for args, at, signum, code in ((argv, (1, 2), signal.SIGUSR1, 138), (resume, (2, 1), signal.SIGINT, 130),
                                   (resume, (2, 3), signal.SIGTERM, 143)):
        assert run_signalled(args, at, signum) == code
        err = capfd.readouterr().err.strip().splitlines()
        name = signal.Signals(signum).name
        assert err[-1].startswith(f'Stopped by {name} at batch {at[1]} of epoch {at[0]}: the run is saved in '
                                  f'{run_dir / "state-last.pt"}; continue it with: python ')
        assert err[-1].endswith(' --resume') and 'Traceback' not in '\n'.join(err)
        state = load(run_dir / 'state-last.pt')
        assert state['epoch'] == at[0] - 1 and state['partial']['batch'] == at[1]
    assert run(argv + ['--resume']) == 0
    for name in ('weights-last.pt', 'weights-best.pt'):
        assert_same_weights(load(tmp_path / 'full' / name), load(run_dir / name))
    assert read_csv(tmp_path / 'full' / 'stats_adv.csv', reproducible=True) == read_csv(run_dir / 'stats_adv.csv',
                                                                               reproducible=True)


def test_a_run_folder_held_by_a_live_process_is_refused_a_dead_ones_lock_is_taken_over(data_dir, tmp_path, capsys):
    """Two writers: a second start into a folder whose lock names a live process (here: this one) is refused with
    one line naming it, before any data is read; a lock of another host is never taken; a dead process's lock on
    this host is taken over with a note, and a finished run leaves no lock."""
    import socket
    import subprocess
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    lock = run_dir / '.lock'
    here = f'{os.getpid()} {socket.gethostname()}\n'
    for content, message in ((here, f'is in use by process {os.getpid()} on this host'),
                             ('4242 other-node\n', 'is locked by process 4242 on host other-node')):
        lock.write_text(content)
        assert run(tiny_args(data_dir, tmp_path, 'run', data='cifar10')) == 2
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1, err
        assert sorted(os.listdir(run_dir)) == ['.lock'] and lock.read_text() == content
    dead = subprocess.Popen(['true'])
    dead.wait()
    lock.write_text(f'{dead.pid} {socket.gethostname()}\n')
    assert run(tiny_args(data_dir, tmp_path, 'run', '--num-adv-epochs', '1', data='cifar10')) == 0
    assert f'was left by process {dead.pid}, which is no longer running; taken over' in capsys.readouterr().out
    assert not lock.exists() and (run_dir / 'state-last.pt').exists()


def test_a_damaged_generated_file_is_one_line_before_the_run_folder(data_dir, tmp_path, capsys):
    """The CRC-32 pass of a generated-data npz (core/data/npz.py verify_npz) runs before anything is written."""
    import shutil
    aux = tmp_path / 'aux.npz'
    shutil.copy(data_dir / 'aux.npz', aux)
    with open(aux, 'r+b') as f:
        f.seek(os.path.getsize(aux) // 2)
        f.write(b'\xff' * 256)
    argv = tiny_args(data_dir, tmp_path, 'run')
    argv[argv.index('--aux-data-filename') + 1] = str(aux)
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {aux}: member image.npy is damaged') and err.count('\n') == 1, err
    assert not (tmp_path / 'run').exists() and not os.path.exists(f'{aux}.verified')


def test_a_damaged_last_state_names_the_intact_previous_one_which_resumes_bit_identical(data_dir, tmp_path, capsys,
                                                                                        one_thread):
    """Every save keeps the state it replaces as state-prev.pt (with its own checksum): a changed byte in
    state-last.pt is one line naming state-prev.pt, its epoch and --resume-from; that resume keeps the damaged file
    and ends with the uninterrupted run's weights; the flag left in a requeued job script is refused, never
    silently going back."""
    assert run(tiny_args(data_dir, tmp_path, 'full', '--num-adv-epochs', '3', data='cifar10')) == 0
    argv = tiny_args(data_dir, tmp_path, 'run', '--num-adv-epochs', '3', data='cifar10')
    run_dir = tmp_path / 'run'
    assert run(argv + ['--stop-after', '2']) == 0
    assert load(run_dir / 'state-prev.pt')['epoch'] == 1 and load(run_dir / 'state-last.pt')['epoch'] == 2
    assert (run_dir / 'state-prev.pt.sha256').read_text().endswith('  state-prev.pt\n')
    data = bytearray((run_dir / 'state-last.pt').read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run_dir / 'state-last.pt').write_bytes(bytes(data))
    before = sorted(os.listdir(run_dir))
    capsys.readouterr()
    assert run(argv + ['--resume']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'state-last.pt is corrupt' in err and 'Traceback' not in err, err
    assert f'{run_dir / "state-prev.pt"} (epoch 1) is intact: add --resume-from state-prev.pt' in err
    assert sorted(os.listdir(run_dir)) == before
    assert run(argv + ['--resume-from', 'state-prev.pt']) == 2   # without --resume
    assert 'add --resume' in capsys.readouterr().err
    assert run(argv + ['--resume', '--resume-from', 'state-prev.pt']) == 0
    kept = [n for n in os.listdir(run_dir) if n.startswith('state-last-damaged-') and n.endswith('.pt')]
    assert len(kept) == 1 and (run_dir / kept[0]).read_bytes() == bytes(data)
    for name in ('weights-last.pt', 'weights-best.pt'):
        assert_same_weights(load(tmp_path / 'full' / name), load(run_dir / name))
    capsys.readouterr()
    assert run(argv + ['--resume', '--resume-from', 'state-prev.pt']) == 2
    assert 'state-last.pt is intact' in capsys.readouterr().err and load(run_dir / 'state-last.pt')['epoch'] == 3
    os.remove(run_dir / 'state-last.pt')
    assert run(argv + ['--resume']) == 2 and 'is missing but' in capsys.readouterr().err


def test_a_log_dir_that_is_a_file_is_one_line_before_data(data_dir, tmp_path, capsys):
    (tmp_path / 'file').write_text('x')
    assert run(tiny_args(data_dir, tmp_path / 'file', 'run', data='cifar10')) == 2
    err = capsys.readouterr().err
    assert 'cannot be used as the run folder' in err and err.count('\n') == 1, err


def test_resume_with_other_data_is_refused_unless_asked(data_dir, tmp_path, capsys):
    """The run records what it trained on; --resume with a data folder of 112 instead of 80 training images is one
    line naming what changed (nothing written), and --resume-changed-flags data goes on with it on purpose."""
    from synthetic import write_cifar10
    other = tmp_path / 'other'
    write_cifar10(other, 112, 32)
    argv = tiny_args(data_dir, tmp_path, 'run', '--stop-after', '1', data='cifar10')
    assert run(argv) == 0
    before = {n: (tmp_path / 'run' / n).read_bytes() for n in os.listdir(tmp_path / 'run')}
    capsys.readouterr()
    moved = tiny_args(other, tmp_path, 'run', '--resume', data='cifar10')
    assert run(moved) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'was trained on other data (images 64 -> 96; batches 4 -> 6; train.npz' in err, err
    assert '--resume-changed-flags data' in err
    assert {n: (tmp_path / 'run' / n).read_bytes() for n in os.listdir(tmp_path / 'run')} == before
    assert run(moved + ['--resume-changed-flags', 'data']) == 0


def test_too_few_training_images_for_the_validation_split_names_the_flag(data_dir, tmp_path, capsys):
    assert run(tiny_args(data_dir, tmp_path, 'run', '--validation-size', '80', data='cifar10')) == 2
    err = capsys.readouterr().err
    assert '80 training images cannot give a 80-image validation split; pass a smaller --validation-size' in err
    assert err.count('\n') == 1

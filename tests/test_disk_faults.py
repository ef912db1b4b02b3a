"""A full or failing disk and a changed checkpoint: write_atomic turns ENOSPC/EDQUOT/EROFS/EIO into one line that
names the file and its folder's free space (the previous file intact), end to end on a tiny train-wa.py run that
then resumes; save_atomic's sha256 sidecar, verified by load_checkpoint and by eval-aa.py."""
import errno
import os
import re
import shutil

import pytest
import torch
from eval_aa_helpers import make_run, released_args, run_cli
from train_helpers import assert_same_weights, load, make_data_dir, read_csv, run, tiny_args

from core.utils.atomic import temp_name_pattern, write_atomic
from core.utils.checkpoint import load_checkpoint, load_weights, save_atomic
from core.utils.errors import UserError


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory)


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM])
@pytest.mark.parametrize('where', ['tempfile.mkstemp', 'os.fsync', 'os.replace'])
def test_disk_error_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, code, where):
    path = tmp_path / 'f.bin'
    path.write_bytes(b'old')

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    module, name = where.split('.')
    monkeypatch.setattr(__import__(module), name, fail)
    with pytest.raises(UserError) as e:
        write_atomic(path, lambda f: f.write(b'new'))
    message = str(e.value)
    assert '\n' not in message and str(path) in message and os.strerror(code) in message
    assert 'MiB free in' in message and 'is intact' in message
    assert ('make the folder writable' if code in (errno.EROFS, errno.EACCES, errno.EPERM) else 'free some space') \
        in message
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['f.bin']


def test_torch_save_on_a_full_disk_is_the_same_one_line(tmp_path, monkeypatch):
    """torch.save turns the file's ENOSPC into RuntimeError('... unexpected pos ...'): still the disk's one line."""
    import io
    real_fdopen = os.fdopen

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fdopen', lambda fd, mode: Full(fd, 'wb') if 'w' in mode else real_fdopen(fd, mode))
    with pytest.raises(UserError, match='No space left on device.*free some space'):
        save_atomic({'w': torch.zeros(1000)}, tmp_path / 'w.pt')
    assert os.listdir(tmp_path) == []


def test_other_os_errors_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'replace', lambda *a: (_ for _ in ()).throw(OSError(errno.ENAMETOOLONG, 'too long')))
    with pytest.raises(OSError, match='too long'):
        write_atomic(tmp_path / 'f.bin', lambda f: f.write(b'new'))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='names the fsynced file through /proc/self/fd')
def test_full_disk_mid_run_exit_2_then_resume_ends_bit_identical(data_dir, tmp_path, monkeypatch, capsys, one_thread):
    """The disk fills while state-last.pt of epoch 2 is written: one line, exit 2, epoch 1's state and the weights
    still load, no temporary file; --resume (space freed) ends with the uninterrupted run's weights and CSV."""
    flags = ('--beta', '5', '--adv-eval-freq', '1')
    assert run(tiny_args(data_dir, tmp_path, 'full', *flags, data='cifar10')) == 0
    argv = tiny_args(data_dir, tmp_path, 'full-disk', *flags, data='cifar10')
    run_dir = tmp_path / 'full-disk'
    fsync, seen, state_temp = os.fsync, [], re.compile(r'^\.state-last\.pt\.[a-z0-9_]{8}\.tmp$')

    def full_disk_fsync(fd):
        name = os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))
        seen.append(name)
        if state_temp.match(name) and len([n for n in seen if state_temp.match(n)]) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)
    monkeypatch.setattr(os, 'fsync', full_disk_fsync)
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err.split('\r')[-1]   # after the progress bars
    assert err.count('\n') == 1 and err.startswith(f'error: {run_dir / "state-last.pt"} could not be written')
    assert 'No space left on device' in err and 'MiB free in' in err and 'Traceback' not in err
    monkeypatch.undo()
    assert load_checkpoint(run_dir / 'state-last.pt')['epoch'] == 1
    for name in ('weights-last.pt', 'weights-best.pt'):
        load_weights(run_dir / name)   # verified against its sidecar
    assert not [n for n in os.listdir(run_dir) if n.endswith('.tmp')]
    assert run(argv + ['--resume']) == 0
    for name in ('weights-last.pt', 'weights-best.pt'):
        assert_same_weights(load(tmp_path / 'full' / name), load(run_dir / name))
    assert read_csv(tmp_path / 'full' / 'stats_adv.csv', reproducible=True) == read_csv(run_dir / 'stats_adv.csv',
                                                                               reproducible=True)
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(tmp_path / 'full'))
    assert {'weights-last.pt.sha256', 'weights-best.pt.sha256', 'state-last.pt.sha256'} <= set(os.listdir(run_dir))


def test_sidecar_written_verified_and_optional(tmp_path):
    path = tmp_path / 'weights-last.pt'
    save_atomic({'model_state_dict': {'w': torch.arange(4.0)}}, path)
    digest, name = (tmp_path / 'weights-last.pt.sha256').read_text().split()
    assert name == 'weights-last.pt' and len(digest) == 64
    assert sorted(os.listdir(tmp_path)) == ['weights-last.pt', 'weights-last.pt.sha256']
    assert torch.equal(load_weights(path)['w'], torch.arange(4.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert '\n' not in str(e.value) and f'checkpoint {path} is corrupt: its sha256 differs' in str(e.value)
    save_atomic({'w': torch.zeros(2)}, path)   # a new save replaces the sidecar
    assert torch.equal(load_weights(path)['w'], torch.zeros(2))
    os.remove(tmp_path / 'weights-last.pt.sha256')   # e.g. a released checkpoint: loads unverified
    assert torch.equal(load_weights(path)['w'], torch.zeros(2))


def test_sidecar_temporary_files_are_stale_temp_files():
    pattern = temp_name_pattern(['weights-last.pt'])
    assert pattern.match('.weights-last.pt.sha256.abcd1234.tmp') and pattern.match('.weights-last.pt.abcd1234.tmp')
    assert not pattern.match('.weights-last.pt.md5.abcd1234.tmp')


def test_eval_aa_refuses_a_changed_checkpoint(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    path = os.path.join(log_root, desc, 'weights-best.pt')
    save_atomic(torch.load(path, weights_only=True), path)   # as a run of this project writes it: with its sidecar
    with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and f'checkpoint {path} is corrupt: its sha256 differs' in err
    assert 'AutoAttack' not in out


def test_too_little_space_is_said_at_the_start_and_before_a_save(data_dir, tmp_path, monkeypatch, capsys, one_thread):
    """A folder that cannot hold one save of this model: one line before anything is written; space that runs out
    later: one line before epoch 2's files, epoch 1's state intact, and --resume (space freed) finishes."""
    real, calls = shutil.disk_usage, []

    def disk_usage(path, free_from=(0,)):   # free: 64 KiB from the call numbered in free_from on
        calls.append(path)
        usage = real(path)
        return usage._replace(free=64 << 10) if len(calls) > free_from[0] else usage
    monkeypatch.setattr(shutil, 'disk_usage', disk_usage)
    argv = tiny_args(data_dir, tmp_path, 'small', data='cifar10')
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'has 0.1 MiB free, but saving this run needs about' in err, err
    assert not (tmp_path / 'small').exists()
    calls.clear()
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: disk_usage(path, free_from=(2,)))   # start, epoch 1
    assert run(argv) == 2
    err = capsys.readouterr().err.split('\r')[-1]
    assert err.count('\n') == 1 and 'MiB free, but saving' in err and 'Traceback' not in err, err
    assert load_checkpoint(tmp_path / 'small' / 'state-last.pt')['epoch'] == 1
    monkeypatch.undo()
    assert run(argv + ['--resume']) == 0 and load_checkpoint(tmp_path / 'small' / 'state-last.pt')['epoch'] == 2

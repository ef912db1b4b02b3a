"""core/utils/run_dir.read_args, the one reader of a run's args.txt, and what each of its callers does with a
missing, broken or foreign args.txt: one UserError line naming the file and the fix, nothing written."""
import argparse
import os

import pytest
import torch

from core.run.export import export_weights
from core.run.plotting import read_run
from core.run.run_dir import ARGS_FILE, load_resume_state, read_args, saved_lr, write_args
from core.utils.errors import UserError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def one_line_error(call, *words):
    with pytest.raises(UserError) as e:
        call()
    message = str(e.value)
    assert '\n' not in message and all(w in message for w in words), message
    return message


def test_read_args_round_trip_and_the_released_format(tmp_path):
    args = argparse.Namespace(desc='x', lr=0.1, beta=None, resume_changed_flags=[])
    write_args(args, str(tmp_path))
    assert read_args(str(tmp_path)) == vars(args)
    assert saved_lr(str(tmp_path)) == 0.1
    (tmp_path / 'released').mkdir()
    with open(os.path.join(FIXTURES, 'released-args.txt'), 'rb') as f:
        (tmp_path / 'released' / ARGS_FILE).write_bytes(f.read())
    saved = read_args(str(tmp_path / 'released'))
    assert saved['data'] == 'cifar10s' and saved['data_dir'].startswith('/cluster/')  # the authors' paths, as is


@pytest.mark.parametrize('content, problem', [(None, 'not found'), (b'{"desc": "x",', 'is not JSON'),
                                              (b'\xff\xfe{}', 'is not JSON'), (b'["desc", "x"]', 'JSON list')])
def test_read_args_bad_file_is_one_line_with_the_fix(tmp_path, content, problem):
    if content is not None:
        (tmp_path / ARGS_FILE).write_bytes(content)
    path = os.path.join(str(tmp_path), ARGS_FILE)
    one_line_error(lambda: read_args(str(tmp_path), fix='do this'), path, problem, 'do this')
    if content is None:
        assert read_args(str(tmp_path), missing_ok=True) is None
    else:
        one_line_error(lambda: read_args(str(tmp_path), missing_ok=True), path, problem)  # broken is never ignored
    assert saved_lr(str(tmp_path)) is None  # a resume rewrites args.txt from the resumed state's flags


def test_callers_refuse_a_broken_args_txt_and_keep_their_missing_file_behaviour(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'stats_adv.csv').write_text('epoch,train_loss\n1,0.5\n')
    torch.save({'model_state_dict': torch.nn.Linear(2, 2).state_dict()}, run / 'weights-best.pt')
    assert read_run(str(run))[0] == 'run'  # no args.txt: labelled with the folder name
    (run / ARGS_FILE).write_text('{"desc": "trades-kl"}')
    assert read_run(str(run))[0] == 'trades-kl'

    (run / ARGS_FILE).write_text('{"desc": ')  # broken: refused by every reader, before anything is written
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(run))
    one_line_error(lambda: read_run(str(run)), ARGS_FILE, 'folder name')
    one_line_error(lambda: export_weights(str(run), str(tmp_path / 'out.pt')), ARGS_FILE, 'remove it')
    resume = argparse.Namespace(desc='run', resume=True, resume_changed_flags=[])
    one_line_error(lambda: load_resume_state(str(run), resume, 1), ARGS_FILE, '--overwrite')
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(run))) == before


def test_a_lock_that_cannot_be_written_is_not_left_and_an_empty_one_is_named(tmp_path, monkeypatch):
    """A full disk while the lock is written: nothing left to hold the folder; an empty lock is named, not 'None'."""
    import errno

    from core.run.run_dir import RunLock

    def full(fd, mode):
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fdopen', full)
    folder = str(tmp_path / 'run')
    with RunLock() as lock, pytest.raises(UserError, match='No space left'):
        lock.acquire(folder, 'choose another --desc')
    monkeypatch.undo()
    assert os.listdir(folder) == []
    open(os.path.join(folder, '.lock'), 'w').close()
    with RunLock() as lock, pytest.raises(UserError, match='names no process .* delete it if no run uses'):
        lock.acquire(folder, 'choose another --desc')

"""eval-aa.py under SIGTERM, SIGUSR1 and Ctrl-C after its first chunk is saved: one line naming the state file,
exit 128 + the signal, the handlers restored; the same command again gives the uninterrupted evaluation's numbers."""
import json
import os
import signal

import pytest
from eval_aa_helpers import FakeOfficialAutoAttack, make_run, released_args, run_cli

import core.attacks.autoattack as aa

pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGUSR1, 138), (signal.SIGINT, 130)])
def test_signal_after_a_chunk_one_line_and_the_rerun_continues(tmp_path, capsys, monkeypatch, signum, code):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    run_dir = tmp_path / 'logs' / desc
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--batch-size', '1']
    assert run_cli(argv, capsys)[0] == 0
    full = json.loads((run_dir / 'eval-aa.json').read_text())

    original, calls = aa._attack_subset, []

    def signalled(*args):
        if calls:   # the first attack's chunk is done and saved
            os.kill(os.getpid(), signum)
        calls.append(1)
        return original(*args)
    monkeypatch.setattr(aa, '_attack_subset', signalled)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    result, out, err = run_cli(argv, capsys)
    assert result == code and handlers == {s: signal.getsignal(s) for s in handlers}
    state = [n for n in os.listdir(run_dir) if n.startswith('eval-aa-state')]
    assert len(state) == 1 and 'Traceback' not in err
    lines = [line for line in err.split('\n') if line.strip() and '\r' not in line]   # not the progress bars
    assert lines == [f'stopped by {signal.Signals(signum).name}: the chunks already attacked are kept in '
                     f'{run_dir / state[0]}; run the same command again to continue from there']
    monkeypatch.setattr(aa, '_attack_subset', original)
    result, out, err = run_cli(argv, capsys)
    assert result == 0, err
    resumed = json.loads((run_dir / 'eval-aa.json').read_text())
    assert resumed['resumed'] is True and 'resuming AutoAttack from' in out
    for key in ('clean_accuracy', 'robust_accuracy', 'robust_accuracy_after', 'counts', 'per_image'):
        assert resumed[key] == full[key], key
    assert not [n for n in os.listdir(run_dir) if n.startswith('eval-aa-state')]

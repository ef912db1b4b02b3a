"""Preemption: SIGTERM (Slurm, Kubernetes), SIGUSR1 (Slurm's `--signal` warning) and SIGINT (Ctrl-C) ask a run to
stop at the next step boundary; the exit code is 128 + the signal's number (docs/training.md, "Preemption")."""
import signal
import sys

from core.utils.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def exit_code(signum):
    return 128 + int(signum)   # SIGINT 130, SIGUSR1 138 (Linux), SIGTERM 143


class StopRequest:
    """Records the first of SIGNALS; a training loop polls `signum` between steps. A second Ctrl-C stops at once
    (every file is written atomically, so nothing is left half-written); other repeats are ignored."""

    def __init__(self, immediate=False):
        self.signum, self.immediate, self._previous = None, immediate, {}

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def name(self):
        return signal.Signals(self.signum).name

    def _handle(self, signum, frame):
        if self.immediate or (self.signum is not None and signum == signal.SIGINT):
            raise Stopped(signum, f'stopped by {signal.Signals(signum).name}')
        if self.signum is None:
            self.signum = signum
            print(f'\n{self.name}: stopping after the current training step, then saving.', file=sys.stderr,
                  flush=True)

"""Fault injection for the kill-and-resume test: SCORE_AT_FAULT=`train-batch:E:B` (after batch B's step of epoch E),
`mid-write:<file>:E` (temporary file written, not renamed) or `after-write:<file>:E` (renamed) makes the process
SIGKILL itself there, with no cleanup; a suffix `@R` limits it to rank R (a dead DDP worker)."""
import os
import signal

ENV = 'SCORE_AT_FAULT'
_epoch = None


def set_epoch(epoch):
    global _epoch
    _epoch = epoch


def fault_point(name, batch=None):
    spec = os.environ.get(ENV)
    if not spec:
        return
    key = f'{name}:{_epoch}' if batch is None else f'{name}:{_epoch}:{batch}'
    spec, _, rank = spec.partition('@')
    if spec == key and rank in ('', os.environ.get('RANK', '0')):
        os.kill(os.getpid(), signal.SIGKILL)

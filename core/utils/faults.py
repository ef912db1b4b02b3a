"""A hidden fault-injection hook: the process SIGKILLs itself at a named point (for the kill-and-resume test).

Set the environment variable SCORE_AT_FAULT to `<point>:<epoch>` (or `train-batch:<epoch>:<batch>`) and the
process kills itself with SIGKILL, without any cleanup, when it reaches that point of that epoch. Points:

    train-batch:E:B                 after the optimizer step of batch B (1-based) of epoch E
    mid-write:<file>:E              a file written with core.utils.atomic.write_atomic (in the run folder:
                                    weights-best.pt, weights-last.pt, stats_adv.csv, curves.png, args.txt,
                                    state-last.pt) is fully written to its temporary name, not yet renamed
    after-write:<file>:E            the file has just been renamed into place

Unset (the normal case), `fault_point` is one dictionary lookup. Nothing else reads the variable.
"""
import os
import signal

ENV = 'SCORE_AT_FAULT'
_epoch = None

__all__ = ['ENV', 'fault_point', 'set_epoch']


def set_epoch(epoch):
    """The epoch that `fault_point` names (core.utils.epoch.train_epoch sets it at the start of every epoch)."""
    global _epoch
    _epoch = epoch


def fault_point(name, batch=None):
    """SIGKILL this process if SCORE_AT_FAULT names this point of the current epoch (and batch)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    key = f'{name}:{_epoch}' if batch is None else f'{name}:{_epoch}:{batch}'
    if spec == key:
        os.kill(os.getpid(), signal.SIGKILL)

"""The one exception type for bad user input: scripts print its message as one line on stderr and exit 2."""
import argparse
import math
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line, as every other bad input (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a checkpoint): the message names the problem and the fix."""


class Stopped(Exception):
    """A signal ended the script at once (core.utils.preemption): one line, exit code 128 + `signum`."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


def exit_on_user_error(main):
    """Run `main()`: a UserError is one line and exit 2; a Ctrl-C or a signal that stops at once one line and
    128 + the signal's number."""
    try:
        return main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('\ninterrupted (Ctrl-C): stopped; what was saved before stays (a run continues with --resume).',
              file=sys.stderr)
        sys.exit(130)
    except Stopped as e:
        print(f'\n{e}', file=sys.stderr)
        sys.exit(128 + int(e.signum))
    except RuntimeError as e:
        if not _peer_lost(e):
            raise
        first = str(e).strip().splitlines()[0][:160]
        print(f'\nerror: another process of this torchrun job stopped ({first}); this one stops too (exit 1). The '
              f'last saved state continues with --resume.', file=sys.stderr)
        sys.exit(1)


def _peer_lost(e):
    """A collective failed because a DDP peer died (gloo: connection reset/closed; nccl: its errors, timeouts)."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and (
        isinstance(e, getattr(dist, 'DistError', ())) or any(m in str(e) for m in ('gloo', 'NCCL', 'Connection')))


SEED_MAX = 2 ** 32 - 1  # numpy's np.random.seed accepts [0, 2**32 - 1]
FLOAT32_MAX = 3.4028234663852886e38  # a larger finite flag overflows the float32 tensors it multiplies


def check_number(flag, value, low=None, high=None, *, low_open=False, high_open=False, example=None):
    """UserError unless `value` is finite and in [low, high] (None: unbounded), e.g. `--attack-eps -1.0: must be a
    finite number > 0 (e.g. 8/255).`"""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= FLOAT32_MAX
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return value
    if low is not None and high is not None:
        want = f'in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    elif low is not None:
        want = f'{">" if low_open else ">="} {low}'
    elif high is not None:
        want = f'{"<" if high_open else "<="} {high}'
    else:
        want = ''
    integer = isinstance(value, int) and not isinstance(value, bool) and not isinstance(example, str)   # not 8/255
    kind = 'an integer' if integer else 'a finite number'
    hint = f' (e.g. {example})' if example is not None else ''
    raise UserError(f'{flag} {value}: must be {kind} {want}{hint}.'.replace(' .', '.'))

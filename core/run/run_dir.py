"""The run folder of the training scripts (train-wa.py, train.py): never overwritten unless asked, resumable.

A folder holding any file stops the script (UserError, exit code 2) before anything is read, written or
deleted, unless `--resume` (which needs the run's state file) or `--overwrite` is given (the original deleted it,
docs/differences.md items 5 and 45). A `--resume` checks the
saved flags against the command line (load_resume_state), removes the temporary files of a killed writer
(remove_stale_temp_files) and appends to log-train.log (open_run). `read_args` is the one reader of a run's
args.txt (training, resume, eval-aa.py, plot_stats.py, scripts/export.py).
"""
import json
import os

from core.utils.atomic import temp_name_pattern, write_atomic
from core.utils.checkpoint import load_checkpoint
from core.utils.distributed import barrier
from core.utils.errors import UserError
from core.utils.logger import Logger

__all__ = ['STATE_FILE', 'STATE_FORMAT_VERSION', 'RUN_FILES', 'STALE_TEMP_FILES', 'RESUME_FREE_FLAGS',
           'RESUME_CHANGEABLE_FLAGS', 'check_run_dir', 'load_resume_state', 'check_resume_flags',
           'remove_stale_temp_files', 'ARGS_FILE', 'read_args', 'saved_lr', 'write_args', 'open_run']

STATE_FILE = 'state-last.pt'
ARGS_FILE = 'args.txt'
STATE_FORMAT_VERSION = 1
# The files of a run folder written with core.utils.atomic.write_atomic (log-train.log is appended instead).
RUN_FILES = ('weights-best.pt', 'weights-last.pt', STATE_FILE, 'stats_adv.csv', ARGS_FILE, 'curves.png')
# The temporary files those writes leave behind when the process is killed mid-write (and nothing else).
STALE_TEMP_FILES = temp_name_pattern(RUN_FILES)
# Flags that may differ between a run and its --resume (they do not change the numbers).
# A renamed run folder resumes: its name (--desc, --fname) is not compared.
RESUME_FREE_FLAGS = ('resume', 'overwrite', 'num_workers', 'stop_after', 'device', 'data_dir', 'log_dir',
                     'aux_data_filename', 'resume_changed_flags', 'tensorboard', 'desc', 'fname')
# Flags a resume may change on purpose, named in --resume-changed-flags (docs/training.md).
RESUME_CHANGEABLE_FLAGS = ('lr',)


def check_run_dir(log_dir, args, state_file=STATE_FILE, rename_hint='choose another --desc',
                  resumable_without_state=()):
    """Refuse to touch a folder holding results unless args.resume (needs `state_file`, or one of the files named
    in `resumable_without_state`: a run killed before its first saved epoch) or args.overwrite."""
    state = os.path.join(log_dir, state_file)
    if args.resume:
        if not any(os.path.isfile(os.path.join(log_dir, f)) for f in (state_file,) + tuple(resumable_without_state)):
            raise UserError(f'--resume: {state} not found; start the run without --resume.')
        return
    if os.path.isdir(log_dir) and os.listdir(log_dir) and not args.overwrite:
        names = sorted(os.listdir(log_dir))
        shown = ', '.join(names[:4]) + (', ...' if len(names) > 4 else '')
        raise UserError(f'{log_dir} already holds files ({shown}); add --resume to continue that run, '
                        f'--overwrite to write a new run over its files, or {rename_hint}.')


def load_resume_state(log_dir, args, num_epochs, version=STATE_FORMAT_VERSION, flags_file=ARGS_FILE):
    """The state file of the run to continue (every training script's), after checking that it has `version`,
    matches the flags and has fewer than `num_epochs` epochs done ('epoch' counts the completed ones).

    A run killed before its first epoch was saved has args.txt but no state file: then None (start at epoch 1),
    after the same check of the flags against args.txt.
    """
    if not os.path.isfile(os.path.join(log_dir, STATE_FILE)):
        check_resume_flags(read_args(log_dir, fix='start the run again with --overwrite'), args, log_dir)
        return None
    state = load_checkpoint(os.path.join(log_dir, STATE_FILE))
    if state.get('format_version') != version:
        raise UserError(f'--resume: {log_dir}/{STATE_FILE} has format {state.get("format_version")}, this code '
                        f'reads {version}; finish that run with the version that wrote it, or start it again '
                        f'with --overwrite.')
    check_resume_flags(state['args'], args, log_dir, flags_file)
    if state['epoch'] >= num_epochs:
        raise UserError(f'--resume: {log_dir} already completed its {state["epoch"]} epochs; nothing to do.')
    return state


def check_resume_flags(saved, args, log_dir, flags_file=ARGS_FILE):
    """A resume runs with the saved flags, except RESUME_FREE_FLAGS and those named in --resume-changed-flags."""
    changed = getattr(args, 'resume_changed_flags', ())
    diff = [k for k in vars(args) if k not in RESUME_FREE_FLAGS and k not in changed
            and saved.get(k, None) != getattr(args, k)]
    if diff:
        allowed = [k for k in diff if k in RESUME_CHANGEABLE_FLAGS]
        hint = (f' (to change {", ".join(allowed)} on purpose, add --resume-changed-flags {",".join(allowed)})'
                if allowed else '')
        raise UserError(f'--resume: the flags differ from the saved run for {", ".join(diff)}; '
                        f'resume with the flags of {os.path.join(log_dir, flags_file)}{hint}.')


def remove_stale_temp_files(log_dir):
    """Delete the temporary files a killed writer of this run folder left (only names matching STALE_TEMP_FILES)."""
    removed = sorted(n for n in os.listdir(log_dir) if STALE_TEMP_FILES.match(n))
    for name in removed:
        os.remove(os.path.join(log_dir, name))
    return removed


def read_args(run_dir, missing_ok=False, fix='pass the folder of a run written by train-wa.py'):
    """The flags saved in RUN_DIR/args.txt, as a dict: the JSON object write_args writes (the authors' released
    args.txt has the same format, their cluster paths included; docs/differences.md item 6 says which saved values
    eval-aa.py uses).

    A missing file is None with `missing_ok`, else a UserError. A file that cannot be read or is not a JSON object
    is always a UserError: one line naming the file, the problem and `fix` (what the caller's user should do).
    """
    path = os.path.join(run_dir, ARGS_FILE)
    if missing_ok and not os.path.lexists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise UserError(f'{path} not found; {fix}.') from None
    except OSError as e:
        raise UserError(f'{path} cannot be read ({e.strerror}); {fix}.') from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise UserError(f'{path} is not JSON ({e}); {fix}.') from None
    if not isinstance(saved, dict):
        raise UserError(f'{path} holds a JSON {type(saved).__name__}, not an object of training flags; {fix}.')
    return saved


def saved_lr(log_dir):
    """The --lr in log_dir/args.txt, or None if the file is missing or unreadable: the resume then rewrites args.txt
    from the flags of the resumed state (train-wa.py, train.py), which check_resume_flags compared with the command
    line."""
    try:
        saved = read_args(log_dir, missing_ok=True)
    except UserError:
        return None
    return None if saved is None else saved.get('lr')


def write_args(args, log_dir):
    """args.txt: JSON of every flag (indent 4), written atomically."""
    text = json.dumps(args.__dict__, indent=4)
    write_atomic(os.path.join(log_dir, ARGS_FILE), lambda f: f.write(text.encode()))


def open_run(log_dir, args, runtime, new_run):
    """Create the run folder (removing the temporary files of a killed writer on a resume), open log-train.log
    (appended on --resume) and, for a new run (`new_run`), write args.txt."""
    stale = []
    if runtime.is_primary:
        os.makedirs(log_dir, exist_ok=True)
        stale = remove_stale_temp_files(log_dir) if args.resume else []
    barrier(runtime)
    logger = Logger(os.path.join(log_dir, 'log-train.log'), mode='a' if args.resume else 'w',
                    enabled=runtime.is_primary)
    if runtime.is_primary and new_run:
        write_args(args, log_dir)
    logger.log('Using device: {}'.format(runtime.device.type))
    if stale:
        logger.log('Removed the temporary files of an interrupted write: {}.'.format(', '.join(stale)))
    return logger

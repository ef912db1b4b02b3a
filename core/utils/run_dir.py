"""The run-folder policy shared by the training scripts: an existing run is never overwritten unless asked.

A folder holding any file stops the script (UserError, exit code 2) before anything is read, written or
deleted, unless `--resume` (which needs the run's state file) or `--overwrite` is given.
"""
import os

from core.errors import UserError

__all__ = ['STATE_FILE', 'check_run_dir']

STATE_FILE = 'state-last.pt'


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

"""The run folder of every training script: never written over unless asked (the original deleted it,
docs/differences.md items 5 and 45), resumable; `read_args` is the one reader of a run's args.txt."""
import datetime
import json
import os
import shutil
import socket

from core.data.npz import VERIFIED_SUFFIX
from core.utils.atomic import CHECKSUM_SUFFIX, move_aside, temp_name_pattern, write_atomic
from core.utils.checkpoint import load_checkpoint, save_atomic
from core.utils.distributed import barrier
from core.utils.errors import UserError
from core.utils.logger import Logger

STATE_FILE = 'state-last.pt'
PREVIOUS_STATE_FILE = 'state-prev.pt'  # the state that state-last.pt replaced: --resume-from when that one breaks
LOCK_FILE = '.lock'
ARGS_FILE = 'args.txt'
STATE_FORMAT_VERSION = 1
# The files of a run folder written with core.utils.atomic.write_atomic (log-train.log is appended instead).
RUN_FILES = ('weights-best.pt', 'weights-last.pt', STATE_FILE, PREVIOUS_STATE_FILE, 'stats_adv.csv', ARGS_FILE,
             'curves.png')
# The temporary files those writes leave behind when the process is killed mid-write (and nothing else).
STALE_TEMP_FILES = temp_name_pattern(RUN_FILES)
# Flags that may differ between a run and its --resume (they do not change the numbers).
# A renamed run folder resumes: its name (--desc, --fname) is not compared.
RESUME_FREE_FLAGS = ('resume', 'overwrite', 'num_workers', 'stop_after', 'device', 'data_dir', 'log_dir',
                     'aux_data_filename', 'resume_changed_flags', 'tensorboard', 'desc', 'fname', 'resume_from')
# Flags a resume may change on purpose, named in --resume-changed-flags (docs/training.md).
RESUME_CHANGEABLE_FLAGS = ('lr', 'data')


def run_files(log_dir):
    """The names in the run folder, sorted, its lock left out (none if it does not exist)."""
    return sorted(n for n in os.listdir(log_dir) if n != LOCK_FILE) if os.path.isdir(log_dir) else []


def overwrite_run(folder, log=print):
    """--overwrite: the earlier run's files aside (core.utils.atomic.move_aside), said in one line."""
    aside, names = move_aside(folder, keep=(LOCK_FILE,))
    if aside is not None:
        log(f'--overwrite: the earlier run\'s {len(names)} files were moved to {aside}.')


class RunLock:
    """One live process per run folder: folder/.lock, created atomically (O_EXCL) with 'pid host'. A lock of a
    dead process on this host is taken over with a note; one of another host is reported, never taken."""

    def __init__(self):
        self.path = self.created = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.path is not None and _holder(self.path) == (os.getpid(), socket.gethostname()):
            os.remove(self.path)
            folder = os.path.dirname(self.path)
            while self.created and not os.listdir(folder):   # folders this run made and wrote nothing into
                os.rmdir(folder)
                if folder == self.created:
                    break
                folder = os.path.dirname(folder)

    def acquire(self, folder, hint):
        created, top = None, os.path.abspath(folder)
        while not os.path.lexists(top):   # the outermost folder this run creates
            created, top = top, os.path.dirname(top)
        path = os.path.join(os.path.abspath(folder), LOCK_FILE)
        try:
            os.makedirs(folder, exist_ok=True)
            fd = self._create(path, folder, hint)
            try:
                with os.fdopen(fd, 'w') as f:
                    f.write(f'{os.getpid()} {socket.gethostname()}\n')
            except OSError:
                os.remove(path)   # an empty lock would hold the folder for good (a full disk)
                raise
        except OSError as e:
            raise UserError(f'{folder} cannot be used as the run folder ({e.strerror}); give a writable folder '
                            f'({hint}).') from None
        self.path, self.created = path, created

    @staticmethod
    def _create(path, folder, hint):
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        try:
            return os.open(path, flags, 0o644)
        except FileExistsError:
            pid, host = _holder(path)
        if pid is None:
            raise UserError(f'{path} names no process (a start that failed while writing it?): delete it if no run '
                            f'uses {folder}, or {hint}.')
        if host != socket.gethostname():
            raise UserError(f'{folder} is locked by process {pid} on host {host} ({path}): wait for that run, '
                            f'{hint}, or delete {path} if that process is gone.')
        if _alive(pid):
            raise UserError(f'{folder} is in use by process {pid} on this host (lock {path}): wait for it to end, '
                            f'or {hint}.')
        os.remove(path)
        print(f'note: {path} was left by process {pid}, which is no longer running; taken over.')
        return os.open(path, flags, 0o644)


def _holder(path):
    try:
        with open(path) as f:
            pid, host = f.read().split()
        return int(pid), host
    except (OSError, ValueError):
        return None, None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError):
        return pid is not None
    return True


def check_run_dir(log_dir, args, state_file=STATE_FILE, rename_hint='choose another --desc',
                  resumable_without_state=()):
    """Refuse to touch a folder holding results unless args.resume (needs `state_file`, or one of the files named
    in `resumable_without_state`: a run killed before its first saved epoch) or args.overwrite."""
    state = os.path.join(log_dir, state_file)
    if args.resume:
        kept = (state_file, PREVIOUS_STATE_FILE) + tuple(resumable_without_state)   # load_resume_state says which
        if not any(os.path.isfile(os.path.join(log_dir, f)) for f in kept):
            raise UserError(f'--resume: {state} not found; start the run without --resume.')
        return
    names = run_files(log_dir)
    if names and not args.overwrite:
        shown = ', '.join(names[:4]) + (', ...' if len(names) > 4 else '')
        raise UserError(f'{log_dir} already holds files ({shown}); add --resume to continue that run, '
                        f'--overwrite to write a new run over its files, or {rename_hint}.')


def save_state(state, log_dir):
    """state-last.pt; the one it replaces stays as state-prev.pt (hard-linked first: a kill at any point leaves a
    complete state-last.pt), which --resume-from continues from when state-last.pt is damaged."""
    path, prev = os.path.join(log_dir, STATE_FILE), os.path.join(log_dir, PREVIOUS_STATE_FILE)
    # already one file when the last save failed after this step (a rename onto the same file does nothing)
    if os.path.isfile(path) and not (os.path.isfile(prev) and os.path.samefile(path, prev)):
        if os.path.exists(prev + CHECKSUM_SUFFIX):   # never a stale checksum beside a new state-prev.pt
            os.remove(prev + CHECKSUM_SUFFIX)
        tmp = os.path.join(log_dir, f'.{PREVIOUS_STATE_FILE}.hardlink.tmp')   # a STALE_TEMP_FILES name
        if os.path.lexists(tmp):
            os.remove(tmp)
        try:
            os.link(path, tmp)
        except OSError:   # a file system without hard links: the same bytes, copied
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
        if os.path.isfile(path + CHECKSUM_SUFFIX):
            with open(path + CHECKSUM_SUFFIX) as f:
                line = f.read().replace(STATE_FILE, PREVIOUS_STATE_FILE)
            write_atomic(prev + CHECKSUM_SUFFIX, lambda f: f.write(line.encode()))
    save_atomic(state, path)


def _usable(path):
    try:
        return load_checkpoint(path)
    except UserError:
        return None


def load_resume_state(log_dir, args, num_epochs, version=STATE_FORMAT_VERSION, flags_file=ARGS_FILE, primary=True):
    """The state to continue (state-last.pt, or --resume-from FILE while that one is damaged), checked: format
    `version`, the flags, fewer than `num_epochs` epochs done; None for a run killed before its first saved epoch."""
    last, prev = os.path.join(log_dir, STATE_FILE), os.path.join(log_dir, PREVIOUS_STATE_FILE)
    chosen = os.path.join(log_dir, args.resume_from) if getattr(args, 'resume_from', None) else last
    if chosen != last and (not os.path.isfile(chosen) or os.path.isfile(last) and _usable(last) is not None):
        why = f'{chosen} does not exist' if not os.path.isfile(chosen) else f'{last} is intact'
        raise UserError(f'--resume-from: {why}; it recovers a run whose {STATE_FILE} is damaged or missing: drop '
                        '--resume-from to continue from its last state.')
    if not os.path.isfile(chosen):
        if os.path.isfile(prev):
            raise UserError(f'--resume: {last} is missing but {prev} exists: add --resume-from '
                            f'{PREVIOUS_STATE_FILE} to continue from it.')
        check_resume_flags(read_args(log_dir, fix='start the run again with --overwrite'), args, log_dir)
        return None
    try:
        state = load_checkpoint(chosen)
    except UserError as e:
        older = _usable(prev) if chosen == last and os.path.isfile(prev) else None
        if older is None:
            raise
        raise UserError(f'{e}. {prev} (epoch {older["epoch"]}{", mid-epoch" if older.get("partial") else ""}) is '
                        f'intact: add --resume-from {PREVIOUS_STATE_FILE} to continue from it (the damaged file '
                        'is kept).') from None
    if state.get('format_version') != version:
        raise UserError(f'--resume: {chosen} has format {state.get("format_version")}, this code reads {version}; '
                        'finish that run with the version that wrote it, or start it again with --overwrite.')
    check_resume_flags(state['args'], args, log_dir, flags_file)
    if state['epoch'] >= num_epochs:
        raise UserError(f'--resume: {log_dir} already completed its {state["epoch"]} epochs; nothing to do.')
    if chosen != last and primary and os.path.isfile(last):   # kept, out of the way of the next save's rotation
        kept = os.path.join(log_dir, f'state-last-damaged-{datetime.datetime.now():%Y%m%d-%H%M%S}.pt')
        for suffix in ('', CHECKSUM_SUFFIX):
            if os.path.isfile(last + suffix):
                os.replace(last + suffix, kept + suffix)
        print(f'--resume-from {args.resume_from}: the damaged {STATE_FILE} was kept as {kept}.')
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


def data_fingerprint(loader, *paths):
    """What a run trained on: image and batch counts of its training loader and the sizes of its data files."""
    files = {}
    for path in filter(None, paths):
        names = sorted(os.listdir(path)) if os.path.isdir(path) else [os.path.basename(path)]
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        files.update((n, os.path.getsize(os.path.join(folder, n))) for n in names
                     if os.path.isfile(os.path.join(folder, n)) and not n.endswith(VERIFIED_SUFFIX))
    return {'images': len(loader.dataset), 'batches': len(loader), 'files': files}


def check_data(saved, now, args, log_dir):
    """A resume trains on the saved run's data (`data_fingerprint`), unless --resume-changed-flags data."""
    if saved is None or saved == now or 'data' in getattr(args, 'resume_changed_flags', ()):
        return
    changed = [f'{k} {saved.get(k)} -> {now[k]}' for k in ('images', 'batches') if saved.get(k) != now[k]]
    changed += [f'{n} {saved["files"].get(n, "absent")} -> {now["files"].get(n, "absent")} bytes'
                for n in sorted(set(saved.get('files', {})) | set(now['files']))
                if saved.get('files', {}).get(n) != now['files'].get(n)]
    hint = (', or add --resume-changed-flags data to go on with these on purpose'
            if hasattr(args, 'resume_changed_flags') else '')
    raise UserError(f'--resume: {log_dir} was trained on other data ({"; ".join(changed)}); resume with its data '
                    f'(--data-dir, --aux-data-filename){hint}.')


def remove_stale_temp_files(log_dir):
    """Delete the temporary files a killed writer of this run folder left (only names matching STALE_TEMP_FILES)."""
    removed = sorted(n for n in os.listdir(log_dir) if STALE_TEMP_FILES.match(n))
    for name in removed:
        os.remove(os.path.join(log_dir, name))
    return removed


def read_args(run_dir, missing_ok=False, fix='pass the folder of a run written by train-wa.py'):
    """RUN_DIR/args.txt as a dict (the authors' released args.txt has the same format; docs/differences.md item 6);
    None if missing with `missing_ok`; anything else wrong is one UserError line naming the file and `fix`."""
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
    """The --lr in log_dir/args.txt; None if missing or unreadable (the resume then rewrites args.txt)."""
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
    stale, moved = [], []
    if runtime.is_primary:
        os.makedirs(log_dir, exist_ok=True)
        stale = remove_stale_temp_files(log_dir) if args.resume else []
        if args.overwrite:
            overwrite_run(log_dir, log=moved.append)
    barrier(runtime)
    logger = Logger(os.path.join(log_dir, 'log-train.log'), mode='a' if args.resume else 'w',
                    enabled=runtime.is_primary)
    if runtime.is_primary and new_run:
        write_args(args, log_dir)
    logger.log('Using device: {}'.format(runtime.device.type))
    for line in moved:
        print(line)
        logger.log(line)
    if stale:
        logger.log('Removed the temporary files of an interrupted write: {}.'.format(', '.join(stale)))
    return logger

"""The one file writer: a temporary file beside the target, fsynced, os.replace'd, the folder fsynced; a crash leaves
the previous file intact (docs/differences.md item 45)."""
import datetime
import errno
import os
import re
import shutil
import tempfile

from core.utils.errors import UserError
from core.utils.faults import fault_point

CHECKSUM_SUFFIX = '.sha256'  # core.utils.checkpoint's sidecar, written with write_atomic too
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_affixes(basename):
    return f'.{basename}.', '.tmp'


def temp_name_pattern(basenames):
    """A regex of write_atomic's temporary names for these targets and their checksum sidecars:
    `.<name>[.sha256].XXXXXXXX.tmp` (mkstemp's 8 characters)."""
    names = []
    for basename in basenames:
        prefix, suffix = _temp_affixes(basename)
        names.append(re.escape(prefix) + f'(?:{re.escape(CHECKSUM_SUFFIX[1:])}\\.)?[a-z0-9_]{{8}}' + re.escape(suffix))
    return re.compile('^(?:' + '|'.join(names) + ')$')


def write_atomic(path, write):
    """Call `write(f)` on a binary file object, then move the result to `path` atomically; a full or failing disk is
    a one-line UserError."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix, suffix = _temp_affixes(os.path.basename(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        fault_point(f'mid-write:{os.path.basename(path)}')
        os.replace(tmp, path)
    except (OSError, RuntimeError) as caught:
        e = caught if isinstance(caught, OSError) else caught.__context__   # torch.save wraps the file's OSError
        if not isinstance(e, OSError) or e.errno not in DISK_ERRORS:
            raise
        try:
            free = f'{shutil.disk_usage(directory).free / 2 ** 20:.1f} MiB free'
        except OSError:
            free = 'free space unknown'
        fix = 'make the folder writable (or fix the disk)' if e.errno in NOT_WRITABLE else 'free some space'
        raise UserError(f'{path} could not be written ({e.strerror}; {free} in {directory}): the previous file at '
                        f'that path, if any, is intact; {fix} and run the same command again (a training run '
                        'continues with --resume)') from None
    finally:
        if tmp is not None and os.path.exists(tmp):  # only our own temporary file, never the user's `path`
            os.remove(tmp)
    if os.name == 'posix':
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    fault_point(f'after-write:{os.path.basename(path)}')
    return path


def move_aside(folder, keep=()):
    """Move the files of `folder` (not `keep`, not earlier previous-* folders) into folder/previous-<date>/, so that
    a new run never mixes with an old one and nothing is deleted; returns (that folder or None, the names moved)."""
    names = sorted(n for n in os.listdir(folder) if n not in keep and not n.startswith('previous-')) \
        if os.path.isdir(folder) else []
    if not names:
        return None, []
    aside = os.path.join(folder, f'previous-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}')
    os.makedirs(aside)
    for name in names:
        os.replace(os.path.join(folder, name), os.path.join(aside, name))
    return aside, names

"""Atomic file writes (the one writer of the project): a temporary file in the target's folder, flushed and
fsynced, then os.replace, then the folder fsynced so that the rename itself is durable.

A crash mid-write leaves any previous file at the path intact, and no temporary file behind on an exception. The
new file gets the usual permissions (0666 minus the umask), not the 0600 of a bare `tempfile.mkstemp`. Every
file the scripts save (weights, state, CSV, args.txt, curves, json) goes through it; only log files are appended
to (docs/differences.md item 45).
"""
import os
import re
import tempfile

from core.utils.faults import fault_point

__all__ = ['temp_name_pattern', 'write_atomic']


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_affixes(basename):
    """The prefix and suffix of write_atomic's temporary file for a target named `basename`."""
    return f'.{basename}.', '.tmp'


def temp_name_pattern(basenames):
    """A regex matching exactly the temporary file names write_atomic uses for targets named `basenames`:
    `.<name>.XXXXXXXX.tmp`, with tempfile.mkstemp's 8 random characters (a-z, 0-9, _)."""
    names = []
    for basename in basenames:
        prefix, suffix = _temp_affixes(basename)
        names.append(re.escape(prefix) + '[a-z0-9_]{8}' + re.escape(suffix))
    return re.compile('^(?:' + '|'.join(names) + ')$')


def write_atomic(path, write):
    """Call `write(f)` on a binary file object, then move the result to `path` atomically. Returns `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix, suffix = _temp_affixes(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        fault_point(f'mid-write:{os.path.basename(path)}')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):  # only our own temporary file, never the user's `path`
            os.remove(tmp)
        raise
    if os.name == 'posix':
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    fault_point(f'after-write:{os.path.basename(path)}')
    return path

"""Atomic file writes: a temporary file in the target's folder, flushed and fsynced, then os.replace.

A crash mid-write leaves any previous file at the path intact, and no temporary file behind on an exception. The
new file gets the usual permissions (0666 minus the umask), not the 0600 of a bare `tempfile.mkstemp`.
"""
import os
import tempfile

__all__ = ['write_atomic']


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path, write):
    """Call `write(f)` on a binary file object, then move the result to `path` atomically. Returns `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path

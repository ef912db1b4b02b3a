"""Logging: one line per message, the file opened per line, no propagation (docs/differences.md item 29)."""
import contextlib
import logging
import sys

from tqdm import tqdm


class _AppendFile(logging.Handler):

    def __init__(self, path, mode='a'):
        super().__init__()
        self.path = path
        open(path, mode).close()  # create it now (and truncate it with 'w'), as logging.FileHandler does

    def emit(self, record):
        try:
            line = self.format(record)
            with open(self.path, 'a') as f:
                f.write(line + '\n')
        except Exception:
            self.handleError(record)


class _Console(logging.Handler):
    """`stream`: a file object, or 'stdout' / 'stderr' (looked up when the line is written)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def emit(self, record):
        try:
            line = self.format(record)
            stream = getattr(sys, self.stream) if isinstance(self.stream, str) else self.stream
            with tqdm.external_write_mode(file=stream):
                stream.write(line + '\n')
                stream.flush()
        except Exception:
            self.handleError(record)


def _handlers(path, mode, console, fmt, datefmt):
    handlers = ([_AppendFile(path, mode)] if path is not None else []) + (
        [_Console(console)] if console is not None else [])
    formatter = logging.Formatter(fmt, datefmt)
    for h in handlers:
        h.setFormatter(formatter)
    return handlers


def close_logger(logger):
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def setup_logger(name, path=None, mode='a', console=None, fmt='%(message)s', datefmt=None, enabled=True):
    """The logger `name`, its previous handlers replaced; `enabled=False` drops every message, touches no file."""
    logger = logging.getLogger(name)
    close_logger(logger)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.disabled = not enabled
    if enabled:
        for h in _handlers(path, mode, console, fmt, datefmt):
            logger.addHandler(h)
    return logger


@contextlib.contextmanager
def routed(name, path=None, level=logging.DEBUG):
    """During the block, another library's logger `name` also writes to `path` and stdout, not to the root."""
    logger = logging.getLogger(name)
    old_level, old_propagate = logger.level, logger.propagate
    handlers = _handlers(path, 'a', 'stdout', '%(message)s', None)
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield logger
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


class Logger:
    """The run log: `log(msg)` prints msg (or writes it to `stream`) and appends it to `path` ('w': the reference's)."""

    def __init__(self, path, mode='w', enabled=True, fmt='%(message)s', datefmt=None, stream=None):
        self.enabled = enabled
        self.stream = stream
        self.logger = setup_logger(f'score-at.run.{path}', path, mode=mode, console=stream, fmt=fmt, datefmt=datefmt,
                                   enabled=enabled)
        if enabled:
            print('Logging to file: ', path)

    def log(self, message):
        if not self.enabled:
            return
        if self.stream is None:
            print(message)
        self.logger.info(message)

    def close(self):
        close_logger(self.logger)

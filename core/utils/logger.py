"""Logging for every script: one set-up function, `setup_logger`, and the run log `Logger` built on it.

A logger of this project writes each message as one line to a log file and/or to the console:

- the file is appended to, opened and closed per line (`mode='w'` truncates it once, at set-up), so that several
  writers of one file keep their lines in order (eval-aa.py, the AutoAttack adapter and the AutoAttack package all
  write log-aa.log) and no file stays open after a script returns;
- the console is stdout or stderr as it is when the line is written, with any tqdm progress bar cleared and
  redrawn around the line.

The handlers hang on a named logger of the project's own (not the root logger, `propagate` off), so third-party INFO
messages do not leak into a file and setting a logger up again replaces its handlers instead of duplicating lines
(docs/differences.md item 29).

    log = setup_logger('score-at.eval-aa', 'LOGS/NAME/log-aa.log', console='stdout', enabled=is_primary).info
    logger = Logger('LOGS/NAME/log-train.log', mode='w', enabled=is_primary)   # train-wa.py: print + file
    with routed('auto-attack', 'LOGS/NAME/log-aa.log', level=logging.WARNING):  # another library's logger
        ...
"""
import contextlib
import logging
import sys

from tqdm import tqdm

__all__ = ['Logger', 'close_logger', 'routed', 'setup_logger']


class _AppendFile(logging.Handler):
    """Each record as one line appended to `path`; `mode='w'` truncates the file when the handler is made."""

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
    """Each record as one line on `stream`: a file object, or 'stdout' / 'stderr' (sys.stdout / sys.stderr as they
    are when the line is written); tqdm bars on the terminal are cleared before the line and redrawn after it."""

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
    """Remove (and close) every handler of `logger`."""
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def setup_logger(name, path=None, mode='a', console=None, fmt='%(message)s', datefmt=None, enabled=True,
                 level=logging.INFO):
    """The logger `name`, set up afresh (its previous handlers removed): log with `.info(message)`.

    Args:
        name: the logger's name (one per log: e.g. 'score-at.eval-aa').
        path: the log file (None: no file); appended to, or truncated once with `mode='w'`.
        console: 'stdout', 'stderr', a stream, or None (no console output).
        fmt, datefmt: the `logging.Formatter` of both outputs (default: the bare message).
        enabled: False gives a logger that drops every message and touches no file (the non-primary processes
            of a torchrun job).
        level: the lowest level written (default INFO).
    Returns:
        The `logging.Logger`.
    """
    logger = logging.getLogger(name)
    close_logger(logger)
    logger.propagate = False
    logger.setLevel(level)
    logger.disabled = not enabled
    if enabled:
        for h in _handlers(path, mode, console, fmt, datefmt):
            logger.addHandler(h)
    return logger


@contextlib.contextmanager
def routed(name, path=None, console='stdout', level=logging.DEBUG, fmt='%(message)s'):
    """During the block, send the records (>= `level`) of another library's logger `name` to `path` (appended) and
    to the console, besides its own handlers, and not up to the root logger; its level and propagation are restored
    after the block."""
    logger = logging.getLogger(name)
    old_level, old_propagate = logger.level, logger.propagate
    handlers = _handlers(path, 'a', console, fmt, None)
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
    """The run log of train-wa.py, train.py and without_DDPM/train_cifar.py: every `log(msg)` prints msg and writes
    it as one line of the log file.

    Args:
        path: the log file.
        mode: 'w' (a new run: the file is truncated, as the reference's 'w+') or 'a' (a resumed run).
        enabled: False makes `log` a no-op (the non-primary processes of a DDP run).
        fmt, datefmt: logging format of the file lines (default: the bare message).
        stream: None prints each message bare to stdout; a stream (e.g. sys.stderr) gets the formatted line.

    `.logger` is the `logging.Logger` behind it: `.logger.info(msg)` writes to the file (and `stream`) only.
    """

    def __init__(self, path, mode='w', enabled=True, fmt='%(message)s', datefmt=None, stream=None):
        self.path = path
        self.enabled = enabled
        self.stream = stream
        self.logger = setup_logger(f'score-at.run.{path}', path, mode=mode, console=stream, fmt=fmt, datefmt=datefmt,
                                   enabled=enabled)
        if enabled:
            print('Logging to file: ', path)

    def log(self, message):
        """Print `message` and append it to the log file."""
        if not self.enabled:
            return
        if self.stream is None:
            print(message)
        self.logger.info(message)

    def close(self):
        close_logger(self.logger)

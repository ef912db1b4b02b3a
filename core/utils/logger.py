"""The run log: every `log(msg)` prints msg and writes it, bare, as one line of `log-train.log`.

Unlike the reference, the file handler hangs on a logger of its own (not the root logger), so third-party
INFO messages do not leak into the file and building a second Logger does not duplicate lines
(docs/differences.md item 29).
"""
import logging

__all__ = ['Logger']


class Logger:
    """Print and log to a file.

    Args:
        path: the log file.
        mode: 'w' (a new run: the file is truncated, as the reference's 'w+') or 'a' (a resumed run).
        enabled: False makes `log` a no-op (the non-primary processes of a DDP run).
        fmt, datefmt: logging format of the file lines (default: the bare message).
        stream: None prints each message bare to stdout; a stream (e.g. sys.stderr) gets the formatted line.
    """

    def __init__(self, path, mode='w', enabled=True, fmt='%(message)s', datefmt=None, stream=None):
        self.path = path
        self.enabled = enabled
        self.stream = stream
        self.logger = logging.getLogger(f'score-at.run.{path}')
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        for h in list(self.logger.handlers):
            self.logger.removeHandler(h)
            h.close()
        if enabled:
            handlers = [logging.FileHandler(path, mode=mode)]
            if stream is not None:
                handlers.append(logging.StreamHandler(stream))
            for handler in handlers:
                handler.setFormatter(logging.Formatter(fmt, datefmt))
                self.logger.addHandler(handler)
            print('Logging to file: ', path)

    def log(self, message):
        """Print `message` and append it to the log file."""
        if not self.enabled:
            return
        if self.stream is None:
            print(message)
        self.logger.info(message)
        for h in self.logger.handlers:
            h.flush()

    def close(self):
        for h in list(self.logger.handlers):
            self.logger.removeHandler(h)
            h.close()

"""core/utils/logger.py: the one logging set-up of every script (file lines, console, enabled, routing)."""
import logging
import sys

from tqdm import tqdm

from core.utils.logger import Logger, routed, setup_logger


def test_run_logger_prints_bare_and_writes_the_file(tmp_path, capsys):
    path = tmp_path / 'log-train.log'
    path.write_text('old run\n')
    logger = Logger(str(path), mode='w', fmt='[x] %(message)s')
    logger.log('Epoch 1')
    logger.log({'lr': 0.1})                      # any object, as print
    logger.logger.info('file only')             # train-wa.py's non-finite message: the file, not stdout
    logger.close()
    assert path.read_text() == "[x] Epoch 1\n[x] {'lr': 0.1}\n[x] file only\n"  # truncated by 'w'
    assert capsys.readouterr().out == f"Logging to file:  {path}\nEpoch 1\n{{'lr': 0.1}}\n"

    again = Logger(str(path), mode='a')            # a resumed run: appended, no duplicated lines
    again.log('Epoch 2')
    again.close()
    assert path.read_text().splitlines()[-2:] == ['[x] file only', 'Epoch 2']


def test_run_logger_with_a_stream_and_disabled(tmp_path, capsys):
    path = tmp_path / 'output.log'
    logger = Logger(str(path), fmt='%(levelname)s - %(message)s', stream=sys.stderr)
    logger.log('hello')
    out, err = capsys.readouterr()
    assert out == f'Logging to file:  {path}\n' and err == 'INFO - hello\n' and path.read_text() == 'INFO - hello\n'
    off = Logger(str(tmp_path / 'other.log'), enabled=False)   # a non-primary process
    off.log('nothing')
    off.logger.info('nothing')
    assert not (tmp_path / 'other.log').exists() and capsys.readouterr() == ('', '')


def test_two_writers_of_one_file_keep_their_order(tmp_path, capsys):
    """eval-aa.py and the AutoAttack adapter both append to log-aa.log: the lines stay in the order written."""
    path = tmp_path / 'log-aa.log'
    path.write_text('an earlier evaluation\n')
    a = setup_logger('test.a', str(path), console='stdout')
    b = setup_logger('test.b', str(path))
    a.info('one')
    b.info('two')
    with open(path, 'a') as f:                  # a third writer (the official package's Logger)
        f.write('three\n')
    a.info('four')
    assert path.read_text() == 'an earlier evaluation\none\ntwo\nthree\nfour\n'
    assert capsys.readouterr().out == 'one\nfour\n'
    setup_logger('test.a', str(path), console='stdout')   # set up again: replaced, not duplicated
    a.info('five')
    assert path.read_text().endswith('four\nfive\n') and capsys.readouterr().out == 'five\n'


def test_disabled_logger_drops_everything(tmp_path, capsys):
    logger = setup_logger('test.off', str(tmp_path / 'x.log'), console='stderr', enabled=False)
    logger.warning('dropped')
    logger.info('dropped')
    assert not (tmp_path / 'x.log').exists() and capsys.readouterr() == ('', '')
    setup_logger('test.off', console='stderr').info('back')
    assert capsys.readouterr().err == 'back\n'


def test_console_lines_clear_the_progress_bar(capsys):
    """A line logged while a tqdm bar is on the terminal does not land in the middle of the bar."""
    logger = setup_logger('test.bar', console='stderr')
    with tqdm(total=3, file=sys.stderr, desc='bar', mininterval=0) as bar:
        bar.update(1)
        logger.info('between')
    before, line, after = capsys.readouterr().err.partition('between\n')
    assert line and before.endswith(' \r') and after.startswith('\rbar:  33%')  # bar erased, line, bar redrawn


def test_routed_restores_the_library_logger(tmp_path, capsys):
    library = logging.getLogger('test.library')
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    library.setLevel(logging.ERROR)
    try:
        with routed('test.library', str(tmp_path / 'aa.log'), level=logging.WARNING):
            library.info('below the level')
            library.warning('checks')
        assert library.handlers == [own] and library.level == logging.ERROR and library.propagate
    finally:
        library.removeHandler(own)
    assert (tmp_path / 'aa.log').read_text() == 'checks\n'
    assert capsys.readouterr() == ('checks\n', 'checks\n')  # our console, and the library's own handler

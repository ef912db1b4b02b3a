"""scripts/subset_npz.py: refused inputs are one line, exit 2, and nothing is written."""
import os

import numpy as np
from script_runner import run_script

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'subset_npz.py')


def make_npz(path, n):
    np.savez(path, image=np.zeros((n, 32, 32, 3), np.uint8), label=np.arange(n, dtype=np.int64))


def test_subset_copies_the_first_n(tmp_path, capsys):
    make_npz(tmp_path / 'src.npz', 5)
    assert run_script(SCRIPT, [str(tmp_path / 'src.npz'), str(tmp_path / 'out' / 'dst.npz'), '3']) == 0
    with np.load(tmp_path / 'out' / 'dst.npz') as f:
        assert f['label'].tolist() == [0, 1, 2]


def test_n_larger_than_the_file_and_garbage_files_exit_2(tmp_path, capsys):
    make_npz(tmp_path / 'src.npz', 5)
    (tmp_path / 'garbage.npz').write_bytes(b'not an npz at all')
    cases = [([str(tmp_path / 'src.npz'), str(tmp_path / 'dst.npz'), '6'], 'holds only 5 images'),
             ([str(tmp_path / 'garbage.npz'), str(tmp_path / 'dst.npz'), '2'], 'not a readable .npz'),
             ([str(tmp_path / 'src.npz'), str(tmp_path / 'garbage.npz'), '2'], 'not a readable .npz')]
    for argv, message in cases:
        capsys.readouterr()
        assert run_script(SCRIPT, argv) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == ['garbage.npz', 'src.npz']
    assert (tmp_path / 'garbage.npz').read_bytes() == b'not an npz at all'


def test_a_damaged_source_and_a_full_disk_exit_2(tmp_path, capsys, monkeypatch):
    make_npz(tmp_path / 'src.npz', 50)
    data = bytearray((tmp_path / 'src.npz').read_bytes())
    data[len(data) // 2] ^= 0xFF   # inside the image member: zipfile's CRC-32 check fails
    (tmp_path / 'bad.npz').write_bytes(bytes(data))
    assert run_script(SCRIPT, [str(tmp_path / 'bad.npz'), str(tmp_path / 'dst.npz'), '5']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'bad.npz is damaged' in err and 'CRC' in err, err

    def full(fd):
        raise OSError(28, os.strerror(28))
    monkeypatch.setattr(os, 'fsync', full)
    assert run_script(SCRIPT, [str(tmp_path / 'src.npz'), str(tmp_path / 'dst.npz'), '5']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'could not be written (No space left on device' in err, err
    assert sorted(os.listdir(tmp_path)) == ['bad.npz', 'src.npz']

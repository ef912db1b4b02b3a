"""Convert generated data to an uncompressed .npz that the data layer reads lazily (docs/differences.md item 50).

    python -m core.data.convert IN OUT.npz

IN is a compressed `.npz` (np.savez_compressed, keys image and label) or the reference's Tiny-Images `.pickle`
(keys data and extrapolated_targets; a pickle is read whole). OUT gets `image` (uint8, N x H x W x 3) and `label`
(int64, N), stored uncompressed. A compressed `.npz` is decompressed in chunks of 64 MiB, so memory stays small
whatever N. OUT must not exist (nothing is overwritten).
"""
import os
import pickle
import sys
import zipfile

import numpy as np

from core.utils.atomic import write_atomic
from core.utils.errors import UserError, exit_on_user_error

_CHUNK = 64 << 20


def _write_member(zout, key, shape, dtype, chunks):
    """Write `key.npy` into the open zip `zout` (stored) from an iterable of byte chunks."""
    header = {'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)), 'fortran_order': False, 'shape': tuple(shape)}
    with zout.open(key + '.npy', 'w', force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        for chunk in chunks:
            f.write(chunk)


def _npz_chunks(zin, name):
    """(shape, dtype, iterator over raw byte chunks) of member `name` of an npz zip, decompressing as it goes."""
    f = zin.open(name)
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran:
        raise UserError(f'{name}: Fortran-ordered arrays are not supported; save it C-ordered.')

    def chunks():
        with f:
            while True:
                b = f.read(_CHUNK)
                if not b:
                    return
                yield b
    return shape, dtype, chunks()


def _convert(src, out):
    """Write the uncompressed npz to `out` (a binary file object)."""
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED, allowZip64=True) as zout:
        if src.endswith(('.pickle', '.pkl')):
            with open(src, 'rb') as f:
                d = pickle.load(f)
            if not isinstance(d, dict) or 'data' not in d or 'extrapolated_targets' not in d:
                raise UserError(f'{src}: expected a dict with keys data and extrapolated_targets.')
            images = np.ascontiguousarray(d['data'])
            step = max(1, _CHUNK // max(1, images[0].nbytes)) if len(images) else 1
            _write_member(zout, 'image', images.shape, images.dtype,
                          (images[i:i + step].tobytes() for i in range(0, len(images), step)))
            labels = np.asarray(d['extrapolated_targets'], dtype=np.int64)
        else:
            try:
                zin = zipfile.ZipFile(src)
            except zipfile.BadZipFile:
                raise UserError(f'{src}: not an .npz archive.') from None
            with zin:
                names = zin.namelist()
                for key in ('image', 'label'):
                    if key + '.npy' not in names:
                        raise UserError(f'{src}: no array {key!r}; expected arrays image and label.')
                shape, dtype, chunks = _npz_chunks(zin, 'image.npy')
                _write_member(zout, 'image', shape, dtype, chunks)
                with zin.open('label.npy') as f:
                    labels = np.lib.format.read_array(f).astype(np.int64)
        _write_member(zout, 'label', labels.shape, np.int64, [labels.tobytes()])


def convert(src, dst):
    """Write `dst` (uncompressed npz: image uint8 N x H x W x 3, label int64 N) from `src` (.npz or .pickle)."""
    if not os.path.isfile(src):
        raise UserError(f'{src}: no such file.')
    if os.path.exists(dst):
        raise UserError(f'{dst}: already exists; choose a new output name (nothing is overwritten).')
    return write_atomic(dst, lambda f: _convert(src, f))  # a failure leaves no partial output behind


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise UserError('usage: python -m core.data.convert IN OUT.npz')
    dst = convert(*argv)
    print(f'{argv[0]} -> {dst} (uncompressed; pass it to --aux-data-filename)')


if __name__ == '__main__':
    exit_on_user_error(main)

"""`python -m core.data.convert IN OUT.npz`: generated data as an uncompressed .npz (docs/differences.md item 50)."""
import os
import sys
import zipfile

import numpy as np

from core.data.npz import load_pickle, read_npy_header
from core.utils.atomic import write_atomic
from core.utils.errors import UserError, exit_on_user_error

_CHUNK = 64 << 20


def _write_member(zout, key, shape, dtype, chunks):
    header = {'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)), 'fortran_order': False, 'shape': tuple(shape)}
    with zout.open(key + '.npy', 'w', force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        for chunk in chunks:
            f.write(chunk)


def _convert(src, out):
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED, allowZip64=True) as zout:
        if src.endswith(('.pickle', '.pkl')):
            images, labels = load_pickle(src)
            images = np.ascontiguousarray(images)
            step = max(1, _CHUNK // max(1, images[0].nbytes)) if len(images) else 1
            _write_member(zout, 'image', images.shape, images.dtype,
                          (images[i:i + step].tobytes() for i in range(0, len(images), step)))
            labels = labels.astype(np.int64)
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
                with zin.open('image.npy') as f:
                    shape, fortran, dtype = read_npy_header(f, src, 'image')
                    if fortran:
                        raise UserError(f'{src}: Fortran-ordered arrays are not supported; save it C-ordered.')
                    _write_member(zout, 'image', shape, dtype, iter(lambda: f.read(_CHUNK), b''))
                with zin.open('label.npy') as f:
                    labels = np.lib.format.read_array(f).astype(np.int64)
        _write_member(zout, 'label', labels.shape, np.int64, [labels.tobytes()])


def convert(src, dst):
    """Write `dst` (uncompressed: image uint8 N x H x W x 3, label int64 N) from `src` (.npz or .pickle)."""
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

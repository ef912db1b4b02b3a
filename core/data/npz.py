"""Lazy, checked image/label arrays of uncompressed .npz files (and the reference's .pickle): one `os.pread` per row,
as an `np.memmap`'s touched pages count in the RSS (300 MB file: +290 MB after 2,000 random images)."""
import json
import os
import pickle
import struct
import zipfile

import numpy as np
from tqdm import tqdm

from core.utils.atomic import write_atomic
from core.utils.errors import UserError

CONVERT_CMD = 'python -m core.data.convert {src} {dst}'
_LOCAL_HEADER = struct.Struct('<4s2B4HL2L2H')  # zip local file header, 30 bytes
_LABEL_CHUNK = 1 << 22  # labels are checked in chunks of 4M entries
VERIFIED_SUFFIX = '.verified'  # beside a verified npz: its size and mtime when its CRC-32s last matched


def verify_npz(path, log=print):
    """Read every member of the npz once against its stored CRC-32 (the lazy reader never does, so a damaged file
    would train silently); remembered in `path`.verified, so later starts skip the pass while the file is unchanged."""
    stat = os.stat(path)
    stamp, record = {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}, path + VERIFIED_SUFFIX
    try:
        with open(record) as f:
            if json.load(f) == stamp:
                return
    except (OSError, ValueError):
        pass
    log(f'Verifying the CRC-32 of {path} ({stat.st_size / 2 ** 30:.2f} GiB) once; later starts skip it.')
    with zipfile.ZipFile(path) as zf, tqdm(total=sum(i.file_size for i in zf.infolist()), unit='B', unit_scale=True,
                                           desc='CRC-32', disable=None) as bar:
        for info in zf.infolist():
            try:
                with zf.open(info) as member:   # zipfile compares the CRC-32 when the member's last byte is read
                    while chunk := member.read(1 << 24):
                        bar.update(len(chunk))
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise UserError(f'{path}: member {info.filename} is damaged ({e}); copy or generate the file again.'
                                ) from None
    try:
        write_atomic(record, lambda f: f.write(json.dumps(stamp).encode()))
    except (UserError, OSError) as e:
        log(f'note: the verification of {path} could not be remembered ({e}); the next start verifies it again.')


def npz_members(path):
    """Names (without `.npy`) of the arrays in the `.npz` at `path`."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such file.')
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith('.npy')]
    except zipfile.BadZipFile:
        raise UserError(f'{path}: not an .npz archive (expected np.savez output with image and label).') from None


def read_npy_header(f, path, key):
    """(shape, fortran_order, dtype) of the .npy header at `f`'s position."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise UserError(f'{path}: {key!r} is not a valid .npy member ({e}).') from None


def load_pickle(path):
    """(images, labels) of the reference's Tiny-Images `.pickle` (keys data and extrapolated_targets), in RAM."""
    with open(path, 'rb') as f:
        try:
            d = pickle.load(f)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
            raise UserError(f'{path}: cannot unpickle ({type(e).__name__}: {e}).') from None
    if not isinstance(d, dict) or 'data' not in d or 'extrapolated_targets' not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise UserError(f'{path}: expected a dict with keys data and extrapolated_targets, got {keys}.')
    return np.asarray(d['data']), np.asarray(d['extrapolated_targets'])


class NpyMember:
    """Read-only array over C-ordered rows at `offset` in `path`: `a[i]` reads a row, `a[i:j]` is a lazy view.

    Pickles as its location (DataLoader workers reopen the file).
    """

    def __init__(self, path, offset, shape, dtype):
        self.path, self.offset, self.shape, self.dtype = path, int(offset), tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = None

    ndim = property(lambda self: len(self.shape))

    def __len__(self):
        return self.shape[0]

    def _read(self, start, count):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        nbytes = count * self.row_bytes
        buf = os.pread(self._fd, nbytes, self.offset + start * self.row_bytes)
        if len(buf) != nbytes:
            raise UserError(f'{self.path}: file is truncated (expected {self.shape} {self.dtype} data).')
        return np.frombuffer(buf, dtype=self.dtype).reshape((count,) + self.row_shape)

    def __getitem__(self, i):
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step != 1:
                raise IndexError('NpyMember slices must have step 1')
            count = max(stop - start, 0)
            return NpyMember(self.path, self.offset + start * self.row_bytes, (count,) + self.row_shape, self.dtype)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f'index {i} out of range for {n} rows')
        return self._read(i, 1)[0]

    def __array__(self, dtype=None, copy=None):
        a = self._read(0, len(self)) if len(self) else np.zeros(self.shape, self.dtype)
        return a if dtype is None else a.astype(dtype)

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_fd'] = None
        return state

    def __del__(self):
        if getattr(self, '_fd', None) is not None:
            os.close(self._fd)

    def __repr__(self):
        return f'NpyMember({self.path!r}, offset={self.offset}, shape={self.shape}, dtype={self.dtype})'


def open_npz_member(path, key):
    """Lazy `NpyMember` over the array `key` of the uncompressed `.npz` at `path`."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + '.npy')  # open_image_label_file checked the member exists
        if info.compress_type != zipfile.ZIP_STORED:
            dst = os.path.splitext(path)[0] + '_uncompressed.npz'
            raise UserError(f'{path}: {key!r} is compressed and cannot be memory-mapped; convert it once with '
                            f'`{CONVERT_CMD.format(src=path, dst=dst)}` and use the output.')
        with open(path, 'rb') as f:
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if fields[0] != b'PK\x03\x04':
                raise UserError(f'{path}: corrupt zip header of {key!r}.')
            name_len, extra_len = fields[-2], fields[-1]
            f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
            shape, fortran, dtype = read_npy_header(f, path, key)
            offset = f.tell()
        if dtype.hasobject:
            raise UserError(f'{path}: {key!r} holds Python objects; expected a numeric array.')
        if fortran and len(shape) > 1:
            raise UserError(f'{path}: {key!r} is Fortran-ordered; save it C-ordered (np.ascontiguousarray).')
        if len(shape) == 0:
            raise UserError(f'{path}: {key!r} is a scalar; expected an array.')
        return NpyMember(path, offset, shape, dtype)


def read_labels(labels, path, num_classes):
    """Check 1-D integer labels in [0, num_classes) chunk by chunk; keep them in RAM as uint8/int16/int32."""
    if labels.ndim != 1:
        raise UserError(f'{path}: labels have shape {tuple(labels.shape)}; expected a 1-D array (N,).')
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f'{path}: labels have dtype {labels.dtype}; expected integers in [0, {num_classes}).')
    dtype = np.uint8 if num_classes <= 256 else np.int16 if num_classes <= 32767 else np.int32
    out = np.empty(len(labels), dtype=dtype)
    for start in range(0, len(labels), _LABEL_CHUNK):
        chunk = np.asarray(labels[start:start + _LABEL_CHUNK])
        if chunk.size and (chunk.min() < 0 or chunk.max() >= num_classes):
            bad = chunk[(chunk < 0) | (chunk >= num_classes)][0]
            raise UserError(f'{path}: label {bad} outside [0, {num_classes}); labels must be class indices 0..'
                            f'{num_classes - 1}.')
        out[start:start + len(chunk)] = chunk
    return out


def check_images(images, path, size=32, key='image'):
    """Check an image array's dtype and NHWC shape (N x size x size x 3, uint8) without reading it."""
    shape = tuple(images.shape)
    if images.ndim != 4:
        raise UserError(f'{path}: {key!r} has shape {shape}; expected N x {size} x {size} x 3 (NHWC) uint8.')
    if shape[1] == 3 and shape[3] != 3:
        raise UserError(f'{path}: {key!r} has shape {shape}, which looks like NCHW; expected NHWC '
                        f'N x {size} x {size} x 3 (transpose with .transpose(0, 2, 3, 1)).')
    if shape[3] != 3:
        raise UserError(f'{path}: {key!r} has {shape[3]} channels (shape {shape}); expected 3 (RGB), '
                        f'N x {size} x {size} x 3.')
    if shape[1:3] != (size, size):
        raise UserError(f'{path}: {key!r} has {shape[1]}x{shape[2]} images (shape {shape}); expected '
                        f'{size}x{size}, N x {size} x {size} x 3.')
    if images.dtype != np.uint8:
        raise UserError(f'{path}: {key!r} has dtype {images.dtype}; expected uint8 pixels in [0, 255] '
                        f'(convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]).')


def open_image_label_file(path, num_classes, size=32):
    """Checked (images, labels) of a `.npz` (images a lazy `NpyMember`) or `.pickle`; labels compact, in RAM."""
    if not os.path.exists(path):
        raise UserError(f'{path}: no such file.')
    if path.endswith(('.pickle', '.pkl')):
        images, labels = load_pickle(path)
        image_key = 'data'
    else:
        members = npz_members(path)
        for key in ('image', 'label'):
            if key not in members:
                raise UserError(f'{path}: no array {key!r} (has {members}); expected arrays image '
                                f'(N x {size} x {size} x 3 uint8) and label (N).')
        images, labels = open_npz_member(path, 'image'), open_npz_member(path, 'label')
        image_key = 'image'
    check_images(images, path, size, image_key)
    if labels.ndim == 1 and len(labels) != len(images):
        raise UserError(f'{path}: {len(images)} images but {len(labels)} labels; the counts must match.')
    return images, read_labels(labels, path, num_classes)

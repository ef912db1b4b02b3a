"""Generated training data (`--aux-data-filename`): DDPM/EDM `.npz` files, read lazily (labels in RAM, one byte an
image; docs/differences.md item 50), or the Tiny-Images `.pickle`, loaded whole as the reference. Hard labels.
"""
import bisect
import glob
import os

import numpy as np

from core.data.common import ArraySource
from core.data.npz import open_image_label_file, verify_npz
from core.utils.errors import UserError


def split_aux_spec(spec):
    """Comma-separated entries, a folder standing for its sorted *.npz parts -> a list of files."""
    files = []
    for entry in (e.strip() for e in str(spec).split(',')):
        if not entry:
            continue
        if os.path.isdir(entry):
            parts = sorted(glob.glob(os.path.join(entry, '*.npz')))
            if not parts:
                raise UserError(f'{entry}: folder of generated data holds no *.npz part files.')
            files.extend(parts)
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            raise UserError(f'{entry}: no such file or folder (--aux-data-filename).')
    if not files:
        raise UserError(f'--aux-data-filename {spec!r} names no file.')
    return files


class GeneratedData:
    """The files of `spec` in order as one sequence: `data[i] -> (H x W x 3 uint8 array, int label)`."""

    def __init__(self, spec, num_classes, size=32, verify=True):
        files = split_aux_spec(spec)
        self.parts = [ArraySource(*open_image_label_file(f, num_classes, size)) for f in files]
        for f in files if verify else ():   # after every file's cheap checks: a bad flag does not wait for it
            if not f.endswith(('.pickle', '.pkl')):
                verify_npz(f)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self):
        return self.offsets[-1]

    def __getitem__(self, i):
        if i < 0 or i >= len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.parts[k][i - self.offsets[k]]

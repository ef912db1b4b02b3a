"""Generated (auxiliary) training data: DDPM/EDM `.npz` files and the Tiny-Images `.pickle`.

`--aux-data-filename` takes one file, a comma-separated list of files, or a folder whose `*.npz` files (sorted by
name) are the parts of one data set; several entries are read in the order given, with no merge step. `.npz` files
must be uncompressed (as `np.savez` writes them) and are read lazily (`core.data.npz.NpyMember`): each image is read
from the file when indexed, so the process's memory does not grow with the number of generated images (the labels
are kept in RAM, one byte per image; docs/differences.md item 50). The `.pickle` of Carmon et al. is loaded into
RAM, as the reference does; convert it once with `python -m core.data.convert IN.pickle OUT.npz` to read it lazily
too. The files' labels are used as hard labels.
"""
import bisect
import glob
import os

import numpy as np

from core.data.npz import open_image_label_file
from core.utils.errors import UserError


def split_aux_spec(spec):
    """Expand `--aux-data-filename` into a list of files: comma-separated entries, folders -> their sorted *.npz."""
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


class _Part:
    """One file's images (a lazy `NpyMember` for .npz, an in-RAM array for .pickle) and labels."""

    def __init__(self, path, num_classes, size):
        self.path = path
        self.images, self.labels = open_image_label_file(path, num_classes, size)

    def __len__(self):
        return len(self.labels)


class GeneratedData:
    """Read-only sequence over one or more image/label files: `data[i] -> (H x W x 3 uint8 array, int label)`.

    Args:
        spec (str): a file, a comma-separated list of files, or a folder of `*.npz` parts.
        num_classes (int): labels must lie in [0, num_classes).
        size (int): image height and width (32).
    """

    def __init__(self, spec, num_classes, size=32):
        self.parts = [_Part(f, num_classes, size) for f in split_aux_spec(spec)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self):
        return self.offsets[-1]

    def __getitem__(self, i):
        if i < 0 or i >= len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        part, j = self.parts[k], i - self.offsets[k]
        return np.asarray(part.images[j]), int(part.labels[j])

    @property
    def files(self):
        return [p.path for p in self.parts]

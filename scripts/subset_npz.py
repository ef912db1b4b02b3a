#!/usr/bin/env python3
"""Copy the first N images of an image/label .npz into a new uncompressed .npz (for small runs on a CPU).

    python scripts/subset_npz.py data/cifar10/train.npz data-small/cifar10/train.npz 4096   # never overwrites
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import numpy as np  # noqa: E402

from core.utils.atomic import write_atomic  # noqa: E402
from core.utils.errors import ArgumentParser, exit_on_user_error  # noqa: E402


def fail(msg):
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)


def labels_of(path):
    """len(label) of an image/label .npz; a file numpy cannot read is one error line, exit 2."""
    try:
        with np.load(path, mmap_mode='r') as f:
            return len(f['label']) if 'image' in f and 'label' in f else None
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError, OSError, BadZipFile, EOFError for foreign files
        fail(f'{path} is not a readable .npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else "-"}); '
             'pass an image/label .npz such as scripts/make_npz.py writes')


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('src', help='input .npz with image and label')
    p.add_argument('dst', help='output .npz (must not exist)')
    p.add_argument('n', type=int, help='number of images to keep (the first N)')
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        fail(f'{args.src} does not exist')
    if os.path.exists(args.dst):
        if labels_of(args.dst) != args.n:
            fail(f'{args.dst} exists already with other content; remove it yourself or choose another path')
        print(f'{args.dst}: already holds {args.n} images, kept')
        return
    if args.n <= 0:
        fail('N must be positive')
    have = labels_of(args.src)
    if have is None:
        fail(f'{args.src} has no image/label arrays')
    if args.n > have:
        fail(f'N = {args.n} but {args.src} holds only {have} images; pass N <= {have}')
    try:
        with np.load(args.src, mmap_mode='r') as f:   # reads each member whole: its CRC-32 is checked
            image, label = f['image'][:args.n], f['label'][:args.n]
    except Exception as e:  # noqa: BLE001 - zipfile's 'Bad CRC-32' and numpy's errors: a damaged file
        fail(f'{args.src} is damaged ({type(e).__name__}: {e}); copy or generate it again')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    write_atomic(args.dst, lambda f: np.savez(f, image=np.ascontiguousarray(image),
                                              label=np.ascontiguousarray(label)))
    print(f'{args.dst}: {len(label)} images')


if __name__ == '__main__':
    exit_on_user_error(main)   # write_atomic's one line for a read-only or full disk

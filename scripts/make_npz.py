#!/usr/bin/env python3
"""Write DATA_DIR/train.npz and test.npz from torchvision's CIFAR-10, CIFAR-100 or SVHN (downloaded; no overwrite)."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import numpy as np  # noqa: E402

from core.data import get_data_info  # noqa: E402
from core.data.common import load_split  # noqa: E402
from core.utils.atomic import write_atomic  # noqa: E402
from core.utils.errors import UserError, exit_on_user_error  # noqa: E402

NAMES = ('cifar10', 'cifar100', 'svhn')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data_dir', metavar='DATA_DIR', help='ROOT/cifar10, ROOT/cifar100 or ROOT/svhn')
    data_dir = parser.parse_args(argv).data_dir
    name = os.path.basename(os.path.normpath(data_dir))
    if name not in NAMES:
        raise UserError(f'{data_dir}: the folder name must be one of {", ".join(NAMES)} (the dataset it holds).')
    paths = {split: os.path.join(data_dir, f'{split}.npz') for split in ('train', 'test')}
    for path in paths.values():
        if os.path.exists(path):
            raise UserError(f'{path} exists; nothing written (remove it to write it again).')
    num_classes = get_data_info(data_dir)['num_classes']
    os.makedirs(data_dir, exist_ok=True)
    for split, path in paths.items():
        images, labels = load_split(name, data_dir, split, num_classes)
        write_atomic(path, lambda f, images=images, labels=labels: np.savez(
            f, image=np.ascontiguousarray(images, dtype=np.uint8), label=np.asarray(labels, np.int64)))
        print(f'{split}: {len(labels)} images -> {path}')


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

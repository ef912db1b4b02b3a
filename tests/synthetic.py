"""Tiny synthetic CIFAR-10 npz files in the offline layout (root/cifar10/{train,test}.npz), shared by the tests."""
import os

import numpy as np


def random_images(rng, n):
    """(images (n, 32, 32, 3) uint8, labels (n,) int64 in 0..9), drawn from `rng` in that order."""
    return rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.randint(0, 10, n).astype(np.int64)


def write_cifar10(root, n_train, n_test, rng=None):
    """Write root/cifar10/train.npz and test.npz with random images; returns the RandomState used (seed 0 by
    default), so that a caller can draw more data from the same stream."""
    rng = np.random.RandomState(0) if rng is None else rng
    os.makedirs(root / 'cifar10')
    for split, n in (('train', n_train), ('test', n_test)):
        image, label = random_images(rng, n)
        np.savez(root / 'cifar10' / f'{split}.npz', image=image, label=label)
    return rng

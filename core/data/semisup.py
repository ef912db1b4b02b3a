"""Semi-supervised datasets and the batch sampler of `--unsup-fraction`.

The training set of cifar10s/cifar100s/svhns is the labelled base train split (minus the validation images)
followed by the generated images, as one `ImageDataset` over the two sources: nothing is concatenated or copied,
and generated `.npz` files are read lazily. `sup_indices` are 0..n_real-1 and `unsup_indices` n_real..n-1.

`SemiSupervisedSampler` draws each batch as the reference does (a fresh permutation of the labelled pool per epoch,
consecutive slices of `sup_bs`, filled with generated indices drawn with replacement, shuffled, and a new
permutation when a pass ends; `ceil(dataset_size / batch_size)` batches per epoch; docs/differences.md item 35); a
negative `--unsup-fraction` draws every batch from one pool of real and generated images, without replacement (the
pool stays a lazy `range` and an epoch that ends inside a pass draws only the positions it uses, so index memory
does not grow with the generated data). Two deliberate differences, which change neither the distributions nor the
batch composition, only the random stream (the reference's is not reproducible anyway, docs/differences.md item 32):
  - Randomness comes from generators owned by the sampler, seeded from (seed, epoch), instead of the global
    torch/numpy RNGs. So epoch e's batches (and, through per-item seeds, their augmentations) are a function of
    (seed, e) only: a run resumed at epoch k draws what the uninterrupted run draws, and data loading never
    consumes the training RNG. Call `set_epoch(loader, e)` before each epoch; without it each new iterator
    moves on to the next epoch by itself.
  - DDP: every rank draws the same global batch of `batch_size` (the GLOBAL batch) and keeps the strided share
    `batch[rank::world_size]`. The shares are disjoint and together exactly the batch a single process draws with
    the same seed; since the global batch is shuffled, each share keeps the real/generated mix (in expectation).
    If `world_size` does not divide the batch, ranks `< batch_size % world_size` get one image more.
"""
import math
import os

import numpy as np
import torch

from core.data.common import ArraySource, ImageDataset, get_transforms, load_split
from core.data.generated import GeneratedData
from core.utils.errors import UserError


def validate_unsup_fraction(unsup_fraction):
    """`--unsup-fraction` must be a finite number < 1: in [0, 1) the fraction of each batch drawn from the generated
    data, negative (e.g. -1) one merged pool of real and generated images. UserError otherwise (None,
    used by library callers, passes)."""
    if unsup_fraction is None:
        return None
    f = float(unsup_fraction)
    if not f < 1.0 or not math.isfinite(f):
        raise UserError(f'--unsup-fraction {unsup_fraction}: must be a finite number below 1, the fraction of each '
                        f'batch drawn from the generated data (e.g. 0.7), or negative to draw every batch from one '
                        f'pool of real and generated images.')
    return f


def _seed_sequence(seed, epoch, stream):
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(stream)])


def _pool(indices):
    """Index pool: a `range` stays lazy (50M generated indices cost nothing), anything else becomes an int64 array."""
    if isinstance(indices, range):
        return indices
    return np.asarray(indices, dtype=np.int64)


def _array(pool):
    return np.arange(pool.start, pool.stop, pool.step, dtype=np.int64) if isinstance(pool, range) else pool


def _merge(sup, unsup):
    """The pool `sup + unsup`: a range when the two are adjacent ranges (the datasets of this package: no index
    array, whatever the size of the generated data), else an int64 array."""
    if isinstance(sup, range) and isinstance(unsup, range) and sup.step == unsup.step == 1 and (
            len(unsup) == 0 or sup.stop == unsup.start):
        return range(sup.start, unsup.stop if len(unsup) else sup.stop)
    return np.concatenate([_array(sup), _array(unsup)])


def _take(pool, positions):
    """pool[positions] for an int64 array of positions."""
    if isinstance(pool, range):
        return pool.start + positions.astype(np.int64) * pool.step
    return pool[positions]


class SemiSupervisedSampler(torch.utils.data.Sampler):
    """Batch sampler mixing labelled and generated indices, deterministic per (seed, epoch), DDP-aware.

    Yields lists of `(index, item_seed)` pairs (the seed drives that item's augmentation, see `ImageDataset`).

    Args:
        sup_indices (sequence of int): labelled index pool.
        unsup_indices (sequence of int): generated index pool (may be empty when unsup_fraction is 0).
        batch_size (int): GLOBAL batch size (all ranks together).
        unsup_fraction (float or None): fraction of each batch drawn from `unsup_indices`; None or negative ->
            one merged pool `sup + unsup`, fraction 0.
        num_batches (int or None): batches per epoch; None -> ceil(len(sup pool) / batch_size).
        seed (int): run seed. rank, world_size (int): this process's share of every batch.
        shuffle (bool): False walks the labelled pool in order (plain, unshuffled loaders).
    """

    def __init__(self, sup_indices, unsup_indices, batch_size, unsup_fraction=None, num_batches=None, seed=1,
                 rank=0, world_size=1, shuffle=True):
        if batch_size < 1:
            raise UserError(f'batch size {batch_size} must be positive.')
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} outside [0, world_size={world_size}).')
        if batch_size < world_size:
            raise UserError(f'global batch size {batch_size} is smaller than the world size {world_size}.')
        self.sup_indices, self.unsup_indices = _pool(sup_indices), _pool(unsup_indices)
        self.merged = unsup_fraction is None or unsup_fraction < 0
        if self.merged:
            self.sup_indices = _merge(self.sup_indices, self.unsup_indices)
            self.unsup_indices = range(0)
            unsup_fraction = 0.0
        self.batch_size = batch_size
        self.unsup_fraction = unsup_fraction
        self.unsup_bs = int(batch_size * unsup_fraction)
        self.sup_bs = batch_size - self.unsup_bs
        if len(self.sup_indices) == 0:
            raise UserError('no labelled training images.')
        if self.unsup_bs > 0 and len(self.unsup_indices) == 0:
            raise UserError(f'--unsup-fraction {unsup_fraction} needs generated data (--aux-data-filename).')
        self.num_batches = num_batches if num_batches is not None else math.ceil(len(self.sup_indices) / batch_size)
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next iteration draw epoch `epoch`'s batches."""
        self.epoch = int(epoch)

    def stream_seed(self, stream, epoch=None):
        """A 64-bit seed derived from (seed, epoch, stream); stream 0 torch sampler, 1 numpy, 2 loader workers."""
        epoch = self.epoch if epoch is None else epoch
        return int(_seed_sequence(self.seed, epoch, stream).generate_state(1, np.uint64)[0])

    def global_batches(self, epoch):
        """The global batches of `epoch` as (indices, item_seeds) int64 arrays, before the DDP split."""
        g = torch.Generator()
        g.manual_seed(self.stream_seed(0, epoch))
        rng = np.random.default_rng(_seed_sequence(self.seed, epoch, 1))
        n_sup, count = len(self.sup_indices), 0
        while count < self.num_batches:
            needed = (self.num_batches - count) * self.sup_bs
            if self.shuffle and self.merged and needed < n_sup:
                # The epoch ends inside this pass: its first `needed` positions, uniform without replacement,
                # drawn in O(needed) memory (numpy's Floyd sampling), not a permutation of the whole pool.
                order = np.random.default_rng(_seed_sequence(self.seed, epoch, 3)).choice(n_sup, needed, replace=False)
            else:
                order = torch.randperm(n_sup, generator=g).numpy() if self.shuffle else np.arange(n_sup)
            perm = _take(self.sup_indices, order)
            for start in range(0, len(perm), self.sup_bs):
                if count >= self.num_batches:
                    return
                batch = perm[start:start + self.sup_bs]
                if self.sup_bs < self.batch_size:
                    fill = torch.randint(len(self.unsup_indices), (self.batch_size - len(batch),), generator=g)
                    batch = np.concatenate([batch, _take(self.unsup_indices, fill.numpy())])
                if self.shuffle:
                    rng.shuffle(batch)
                yield batch, rng.integers(0, 2 ** 63 - 1, size=len(batch), dtype=np.int64)
                count += 1

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1  # a new iterator without set_epoch moves on to the next epoch
        for batch, seeds in self.global_batches(epoch):
            share = slice(self.rank, None, self.world_size)
            yield list(zip(batch[share].tolist(), seeds[share].tolist()))

    def __len__(self):
        return self.num_batches


class SemiSupervisedDataset(ImageDataset):
    """Labelled base images followed by generated images, without copying either.

    Attributes: `sup_indices`, `unsup_indices` (ranges), `dataset_size` (base split size before the
    validation split was removed: 50000 for CIFAR, 73257 for SVHN), `generated` (the `GeneratedData` or None).
    """

    def __init__(self, real, generated, transform, dataset_size):
        super().__init__([real] + ([generated] if generated is not None else []), transform)
        n_real = len(real)
        self.generated = generated
        self.sup_indices = range(n_real)
        self.unsup_indices = range(n_real, len(self))
        self.dataset_size = dataset_size


def load_base(name, data_dir, num_classes, use_augmentation='base', validation=False, val_size=1024):
    """Train/test/validation `ImageDataset`s of a base dataset (cifar10, cifar100, svhn) read from data_dir.

    With `validation`, the first `val_size` training images (file order) are removed from the training set and
    served, with the test transform, as the validation set. Returns (train ArraySource, train
    transform, test_dataset, val_dataset or None, size of the base train split).
    """
    train_tf, test_tf = get_transforms(name, use_augmentation)
    images, labels = load_split(name, data_dir, 'train', num_classes)
    test_images, test_labels = load_split(name, data_dir, 'test', num_classes)
    n = len(labels)
    val_dataset = None
    if validation:
        if val_size >= n:
            raise UserError(f'{data_dir}: {n} training images cannot give a {val_size}-image validation split.')
        val_dataset = ImageDataset([ArraySource(images[:val_size], labels[:val_size])], test_tf)
        images, labels = images[val_size:], labels[val_size:]
    train = ArraySource(images, labels)
    test_dataset = ImageDataset([ArraySource(test_images, test_labels)], test_tf)
    return train, train_tf, test_dataset, val_dataset, n


def load_plain(name, data_dir, num_classes, use_augmentation='base', validation=False, val_size=1024):
    """(train dataset, test dataset, val dataset or None, base train size) of a plain dataset."""
    train, train_tf, test_dataset, val_dataset, n = load_base(name, data_dir, num_classes, use_augmentation,
                                                              validation, val_size)
    return ImageDataset([train], train_tf), test_dataset, val_dataset, n


def load_semisup(name, data_dir, num_classes, use_augmentation='base', aux_data_filename=None, validation=False,
                 val_size=1024):
    """(train SemiSupervisedDataset, test dataset, val dataset or None) of `name + 's'`; base data in data_dir.

    The test set is the base `test` split, also for svhns (the reference used SVHN's train split,
    docs/differences.md item 12).
    """
    if not aux_data_filename:
        raise UserError(f'{name}s is semi-supervised and needs generated data: pass --aux-data-filename '
                        f'(a .npz with image and label, a .pickle, a comma-separated list or a folder of parts).')
    generated = GeneratedData(aux_data_filename, num_classes)
    train, train_tf, test_dataset, val_dataset, n = load_base(name, data_dir, num_classes, use_augmentation,
                                                              validation, val_size)
    return SemiSupervisedDataset(train, generated, train_tf, dataset_size=n), test_dataset, val_dataset


# ---------------------------------------------------------------------------------------------------------------
# The per-dataset modules (cifar10.py, cifar100.py, svhn.py, tiny_imagenet.py and the *s ones) are built from these
# ---------------------------------------------------------------------------------------------------------------

def dataset_desc(data, num_classes, mean, std, classes=None):
    """A dataset's `DATA_DESC`: {data, classes, num_classes, mean, std}; classes default to '0' .. 'K-1'."""
    return {'data': data, 'classes': classes if classes is not None else tuple(str(i) for i in range(num_classes)),
            'num_classes': num_classes, 'mean': mean, 'std': std}


def plain_loader(name, num_classes):
    """`load_<name>(data_dir, use_augmentation='base', validation=False, val_size=1024)` of a base dataset:
    (train dataset, test dataset, val dataset or None, base train size) read from data_dir (`load_plain`)."""
    def load(data_dir, use_augmentation='base', validation=False, val_size=1024):
        """(train dataset, test dataset, val dataset or None, base train size) read from data_dir."""
        return load_plain(name, data_dir, num_classes, use_augmentation, validation, val_size)
    load.__name__ = load.__qualname__ = f'load_{name}'
    return load


def semisup_loader(name, num_classes):
    """`load_<name>s(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024)`:
    (train SemiSupervisedDataset, test dataset, val dataset or None), the base data read from the sibling folder
    DATA_DIR/../<name> (e.g. ./data/cifar10s -> ./data/cifar10), the generated ones from aux_data_filename.
    Always these three values, with or without validation (the reference's load_cifar100s crashed its caller's
    unpacking without validation, docs/differences.md item 22)."""
    def load(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024):
        """(train SemiSupervisedDataset, test dataset, val dataset or None)."""
        base_dir = os.path.join(os.path.dirname(os.path.normpath(data_dir)), name)
        return load_semisup(name, base_dir, num_classes, use_augmentation, aux_data_filename, validation, val_size)
    load.__name__ = load.__qualname__ = f'load_{name}s'
    return load

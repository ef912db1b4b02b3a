"""The cifar10s/cifar100s/svhns training sets (base then generated images, no copy), the --unsup-fraction sampler."""
import math
import os

import numpy as np
import torch

from core.data.common import ArraySource, ImageDataset, get_transforms, load_split
from core.data.generated import GeneratedData
from core.utils.errors import UserError


def validate_unsup_fraction(unsup_fraction):
    """`--unsup-fraction`: a finite number < 1, the generated share of each batch, or negative for one merged pool."""
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
    """A `range` stays lazy (50M generated indices cost nothing), anything else becomes an int64 array."""
    return indices if isinstance(indices, range) else np.asarray(indices, dtype=np.int64)


def _array(pool):
    return np.arange(pool.start, pool.stop, pool.step, dtype=np.int64) if isinstance(pool, range) else pool


def _merge(sup, unsup):
    """`sup + unsup`, a range when the two are adjacent ranges (this package's datasets), else an int64 array."""
    if isinstance(sup, range) and isinstance(unsup, range) and sup.step == unsup.step == 1 and (
            len(unsup) == 0 or sup.stop == unsup.start):
        return range(sup.start, unsup.stop if len(unsup) else sup.stop)
    return np.concatenate([_array(sup), _array(unsup)])


def _take(pool, positions):
    if isinstance(pool, range):
        return pool.start + positions.astype(np.int64) * pool.step
    return pool[positions]


class SemiSupervisedSampler(torch.utils.data.Sampler):
    """Batches of `(index, item_seed)`, functions of (seed, epoch) only (docs/differences.md items 32 and 35)."""

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
        self.epoch = int(epoch)

    def stream_seed(self, stream, epoch=None):
        """A 64-bit seed derived from (seed, epoch, stream); stream 0 torch sampler, 1 numpy, 2 loader workers."""
        epoch = self.epoch if epoch is None else epoch
        return int(_seed_sequence(self.seed, epoch, stream).generate_state(1, np.uint64)[0])

    def global_batches(self, epoch):
        """The global batches of `epoch` as (indices, item_seeds) int64 arrays."""
        g = torch.Generator().manual_seed(self.stream_seed(0, epoch))
        rng = np.random.default_rng(_seed_sequence(self.seed, epoch, 1))
        n_sup, count = len(self.sup_indices), 0
        while count < self.num_batches:
            needed = (self.num_batches - count) * self.sup_bs
            if self.shuffle and self.merged and needed < n_sup:
                # the epoch ends in this pass: `needed` positions in O(needed) memory, not a whole permutation
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
    """Base images then generated ones; `dataset_size`: the base split size before the validation split."""

    def __init__(self, real, generated, transform, dataset_size):
        super().__init__([real] + ([generated] if generated is not None else []), transform)
        self.generated, self.dataset_size = generated, dataset_size
        self.sup_indices, self.unsup_indices = range(len(real)), range(len(real), len(self))


def load_base(name, data_dir, num_classes, use_augmentation='base', validation=False, val_size=1024):
    """(train ArraySource, train transform, test, val or None, base train size); val: the first `val_size` images."""
    train_tf, test_tf = get_transforms(name, use_augmentation)
    images, labels = load_split(name, data_dir, 'train', num_classes)
    test_images, test_labels = load_split(name, data_dir, 'test', num_classes)
    n = len(labels)
    val_dataset = None
    if validation:
        if val_size >= n:
            raise UserError(f'{data_dir}: {n} training images cannot give a {val_size}-image validation split; '
                            f'pass a smaller --validation-size (e.g. {max(1, n // 10)}).')
        val_dataset = ImageDataset([ArraySource(images[:val_size], labels[:val_size])], test_tf)
        images, labels = images[val_size:], labels[val_size:]
    test_dataset = ImageDataset([ArraySource(test_images, test_labels)], test_tf)
    return ArraySource(images, labels), train_tf, test_dataset, val_dataset, n


def dataset_desc(data, num_classes, mean, std, classes=None):
    return {'data': data, 'classes': classes if classes is not None else tuple(str(i) for i in range(num_classes)),
            'num_classes': num_classes, 'mean': mean, 'std': std}


def plain_loader(name, num_classes):
    """`load_<name>(data_dir, use_augmentation, validation, val_size)` -> (train, test, val or None, base size)."""
    def load(data_dir, use_augmentation='base', validation=False, val_size=1024):
        train, train_tf, test_dataset, val_dataset, n = load_base(name, data_dir, num_classes, use_augmentation,
                                                                  validation, val_size)
        return ImageDataset([train], train_tf), test_dataset, val_dataset, n
    load.__name__ = load.__qualname__ = f'load_{name}'
    return load


def semisup_loader(name, num_classes):
    """`load_<name>s(...)`: (train, test, val or None), base data in ../<name> (docs/differences.md items 12, 22)."""
    def load(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024, verify=True):
        if not aux_data_filename:
            raise UserError(f'{name}s is semi-supervised and needs generated data: pass --aux-data-filename '
                            f'(a .npz with image and label, a .pickle, a comma-separated list or a folder of parts).')
        generated = GeneratedData(aux_data_filename, num_classes, verify=verify)   # one pass, by rank 0
        base_dir = os.path.join(os.path.dirname(os.path.normpath(data_dir)), name)
        train, train_tf, test_dataset, val_dataset, n = load_base(name, base_dir, num_classes, use_augmentation,
                                                                  validation, val_size)
        return SemiSupervisedDataset(train, generated, train_tf, dataset_size=n), test_dataset, val_dataset
    load.__name__ = load.__qualname__ = f'load_{name}s'
    return load

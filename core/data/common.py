"""The data layer's shared pieces: the base splits (DATA_DIR/{split}.npz, else torchvision's files in DATA_DIR, else
its download; offline, a UserError naming MAKE_NPZ_CMD), transforms, the image dataset and the loaders."""
import argparse
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, get_worker_info

from core.data.npz import open_image_label_file, verify_npz
from core.utils.errors import UserError
from core.utils.utils import str2bool

AUGMENTATIONS = ('none', 'base', 'cutout', 'autoaugment', 'randaugment')
MAKE_NPZ_CMD = 'python {script} {{dir}}'.format(script=os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts', 'make_npz.py')))

# torchvision class, the folder/file it keeps in DATA_DIR, how a split is selected.
_TORCHVISION = {
    'cifar10': (torchvision.datasets.CIFAR10, 'cifar-10-batches-py', 'train'),
    'cifar100': (torchvision.datasets.CIFAR100, 'cifar-100-python', 'train'),
    'svhn': (torchvision.datasets.SVHN, '{split}_32x32.mat', 'split'),
}


def _torchvision_split(name, data_dir, split, download):
    cls, _, how = _TORCHVISION[name]
    kwargs = {'train': split == 'train'} if how == 'train' else {'split': split}
    ds = cls(root=data_dir, download=download, **kwargs)
    if name == 'svhn':  # torchvision keeps SVHN as N x 3 x 32 x 32 (label 10 already mapped to 0); we use NHWC
        return np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), np.asarray(ds.labels, dtype=np.int64)
    return ds.data, np.asarray(ds.targets, dtype=np.int64)


def _download(name, data_dir, split):
    """torchvision's download (a separate function so tests can replace it)."""
    return _torchvision_split(name, data_dir, split, download=True)


def load_split(name, data_dir, split, num_classes):
    """(N x 32 x 32 x 3 uint8 images, int labels) of split `train`/`test` of cifar10/cifar100/svhn."""
    npz = os.path.join(data_dir, f'{split}.npz')
    if os.path.isfile(npz):
        arrays = open_image_label_file(npz, num_classes)
        verify_npz(npz)   # the real data too: a changed byte would train silently
        return arrays
    tv_path = os.path.join(data_dir, _TORCHVISION[name][1].format(split=split))
    if os.path.exists(tv_path):
        try:
            return _torchvision_split(name, data_dir, split, download=False)
        except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError/OSError/ValueError on bad files
            reason = ' '.join(str(e).split())
            raise UserError(f'{tv_path}: cannot read {name} {split} split ({type(e).__name__}: {reason}); '
                            f'replace the files or put {split}.npz in {data_dir}.') from None
    try:
        return _download(name, data_dir, split)
    except Exception as e:  # noqa: BLE001 - offline: URLError, RuntimeError, ...
        raise UserError(f'{name} {split} data not found: tried {npz}, {tv_path} and a torchvision download '
                        f'({type(e).__name__}); put {split}.npz (image N x 32 x 32 x 3 uint8, label N) in '
                        f'{data_dir}: `{MAKE_NPZ_CMD.format(dir=data_dir)}` writes both splits (run it where '
                        f'there is a network and copy the folder here).') from None


class Cutout:
    """Zero a size x size square (clipped at the border) at a uniformly random centre of a C x H x W tensor."""

    def __init__(self, size=18):
        self.size = size

    def __call__(self, x):
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - self.size // 2, 0), min(cy + self.size - self.size // 2, h)
        x0, x1 = max(cx - self.size // 2, 0), min(cx + self.size - self.size // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = 0
        return x

    def __repr__(self):
        return f'Cutout(size={self.size})'


def parse_augmentation(use_augmentation):
    """The reference's bool (True -> 'base', False/None -> 'none'; also as text) or one of AUGMENTATIONS."""
    if use_augmentation is None:
        return 'none'
    try:
        aug = augment_arg(use_augmentation)
    except argparse.ArgumentTypeError:
        raise UserError(f'unknown augmentation {use_augmentation!r}; choose one of {", ".join(AUGMENTATIONS)} '
                        f'(or a bool: true = base, false = none).') from None
    return ('base' if aug else 'none') if isinstance(aug, bool) else aug


def augment_arg(text):
    """argparse type of `--augment`: the reference's bools or a name in AUGMENTATIONS."""
    if isinstance(text, bool):
        return text
    if str(text).lower() in AUGMENTATIONS:
        return str(text).lower()
    try:
        return str2bool(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'expected a boolean or one of {", ".join(AUGMENTATIONS)}, '
                                         f'got {text!r}.') from None


def get_transforms(name, use_augmentation):
    """(train, test) transforms of `name`: as the reference (svhn none), cutout/autoaugment/randaugment beyond it
    (docs/differences.md item 52)."""
    aug = parse_augmentation(use_augmentation)
    test = T.ToTensor()
    if aug == 'none' or name == 'svhn':
        return test, test
    size = 64 if name == 'tiny-imagenet' else 32
    crop_flip = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    base = crop_flip + ([T.RandomRotation(15)] if name == 'cifar100' else [])
    if aug == 'base':
        ops = base + [T.ToTensor()]
    elif aug == 'cutout':
        ops = base + [T.ToTensor(), Cutout(18)]
    elif aug == 'autoaugment':
        ops = crop_flip + [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), T.ToTensor(), Cutout(18)]
    else:  # randaugment
        ops = [T.RandAugment(num_ops=2, magnitude=14)] + base + [T.ToTensor()]
    return T.Compose(ops), test


class ArraySource:
    """Images (N x H x W x 3 uint8, maybe a lazy `NpyMember`) and labels as a sequence of (image, label)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return np.asarray(self.images[i]), int(self.labels[i])


class ImageDataset(torch.utils.data.Dataset):
    """Image sources concatenated (no copy), `ds[i] -> (3 x H x W float in [0, 1], label)`; a key `(index, seed)`
    seeds the transform's draws (independent of the worker count and the global RNG)."""

    def __init__(self, sources, transform):
        self.sources = list(sources)
        self.transform = transform
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources]).tolist()

    def __len__(self):
        return self.offsets[-1]

    def _item(self, i):
        for k in range(len(self.sources)):
            if i < self.offsets[k + 1]:
                return self.sources[k][i - self.offsets[k]]
        raise IndexError(i)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = self._item(int(index))
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if seed is None:
            return self.transform(image), label
        # Only the CPU generator: torch.manual_seed would also queue lazy CUDA/XPU seeding calls (slow, growing).
        rng = torch.default_generator
        state = rng.get_state() if get_worker_info() is None else None  # the main process's RNG is restored
        rng.manual_seed(seed)
        try:
            return self.transform(image), label
        finally:
            if state is not None:
                rng.set_state(state)


class RankBatches(torch.utils.data.Sampler):
    """Batch i of an unshuffled eval loader for rank i % world_size only; `per_rank`: `evaluate` need not split it."""
    per_rank = True

    def __init__(self, num_items, batch_size, rank=0, world_size=1):
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size

    def __iter__(self):
        for i, start in enumerate(range(0, self.num_items, self.batch_size)):
            if i % self.world_size == self.rank:
                yield list(range(start, min(start + self.batch_size, self.num_items)))

    def __len__(self):
        batches = -(-self.num_items // self.batch_size)
        return max(0, -(-(batches - self.rank) // self.world_size))


def eval_loader(dataset, batch_size, num_workers, pin_memory, rank=0, world_size=1):
    if world_size == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          pin_memory=pin_memory)
    return DataLoader(dataset, batch_sampler=RankBatches(len(dataset), batch_size, rank, world_size),
                      num_workers=num_workers, pin_memory=pin_memory)


def train_loader(dataset, batch_sampler, num_workers, pin_memory):
    """Loader over a batch sampler of this package; its generator (worker base seeds) follows `set_epoch`."""
    generator = torch.Generator()
    generator.manual_seed(batch_sampler.stream_seed(2))
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      generator=generator)

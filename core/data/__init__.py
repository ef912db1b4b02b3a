"""`load_data(DATA_DIR)` for DATA_DIR = join(--data-dir, name); cifar10s/cifar100s/svhns read their base data from
the sibling folder (./data/cifar10s -> ./data/cifar10), generated data from `aux_data_filename` (docs/data.md)."""
import math
import os

from core.data.common import AUGMENTATIONS, augment_arg, eval_loader, parse_augmentation, train_loader
from core.data.semisup import SemiSupervisedSampler, dataset_desc, plain_loader, semisup_loader, validate_unsup_fraction
from core.data.tiny_imagenet import DATA_DESC as _TINY
from core.data.tiny_imagenet import load_tinyimagenet
from core.utils.errors import UserError

DATASETS = ('cifar10', 'svhn', 'cifar100', 'tiny-imagenet', 'cifar10s', 'cifar100s', 'svhns')
SEMISUP_DATASETS = ('cifar10s', 'cifar100s', 'svhns')

_CIFAR10 = dataset_desc('cifar10', 10, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010],
                        classes=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                                 'truck'))
_CIFAR100 = dataset_desc('cifar100', 100, mean=[0.5071, 0.4865, 0.4409], std=[0.2673, 0.2564, 0.2762])
# SVHN: CIFAR-10's mean/std, a reference quirk kept (docs/differences.md item 13; only --normalize reads them).
_SVHN = dataset_desc('svhn', 10, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010])
_BASE = (('cifar10', _CIFAR10), ('cifar100', _CIFAR100), ('svhn', _SVHN))
_PLAIN = {name: plain_loader(name, desc['num_classes']) for name, desc in _BASE}
_PLAIN['tiny-imagenet'] = load_tinyimagenet
_SEMISUP = {name + 's': semisup_loader(name, desc['num_classes']) for name, desc in _BASE}
_INFO = (('cifar100', _CIFAR100), ('cifar10', _CIFAR10), ('svhn', _SVHN), ('tiny-imagenet', _TINY))

__all__ = ['AUGMENTATIONS', 'augment_arg', 'DATASETS', 'SEMISUP_DATASETS', 'get_data_info', 'load_data', 'set_epoch',
           'validate_unsup_fraction', 'parse_augmentation']


def get_data_info(data_dir):
    """A fresh `{data, classes, num_classes, mean, std}` of DATA_DIR, by its basename (docs/differences.md item 14)."""
    name = os.path.basename(os.path.normpath(str(data_dir)))
    for key, desc in _INFO:
        if key in name:
            info = dict(desc)
            info['data'] = name
            return info
    raise UserError(f'{data_dir}: unknown dataset {name!r}; the folder name must be one of {", ".join(DATASETS)}.')


def load_data(data_dir, batch_size=256, batch_size_test=256, num_workers=4, use_augmentation='base',
              shuffle_train=True, aux_data_filename=None, unsup_fraction=None, validation=False, seed=1, rank=0,
              world_size=1, pin_memory=False, val_size=1024):
    """(train_dataset, test_dataset, train_loader, test_loader), with `validation` val_dataset/val_loader after each;
    `batch_size` is GLOBAL; `shuffle_train` is ignored for semi-supervised data (docs/differences.md item 35)."""
    name = os.path.basename(os.path.normpath(str(data_dir)))
    if name not in DATASETS:
        raise UserError(f'{data_dir}: unknown dataset {name!r}; the folder name must be one of {", ".join(DATASETS)}.')
    if unsup_fraction is not None and (math.isnan(unsup_fraction) or unsup_fraction >= 1):
        validate_unsup_fraction(unsup_fraction)  # raises
    if name in SEMISUP_DATASETS:
        train_dataset, test_dataset, val_dataset = _SEMISUP[name](data_dir, use_augmentation, aux_data_filename,
                                                                  validation, val_size, verify=rank == 0)
        sampler = SemiSupervisedSampler(train_dataset.sup_indices, train_dataset.unsup_indices, batch_size,
                                        unsup_fraction, math.ceil(train_dataset.dataset_size / batch_size), seed,
                                        rank, world_size)
    else:
        train_dataset, test_dataset, val_dataset, _ = _PLAIN[name](data_dir, use_augmentation, validation, val_size)
        sampler = SemiSupervisedSampler(range(len(train_dataset)), [], batch_size, 0.0, None, seed, rank, world_size,
                                        shuffle=shuffle_train)
    train_dl = train_loader(train_dataset, sampler, num_workers, pin_memory)
    test_dl = eval_loader(test_dataset, batch_size_test, num_workers, pin_memory, rank, world_size)
    if validation:
        val_dl = eval_loader(val_dataset, batch_size_test, num_workers, pin_memory, rank, world_size)
        return train_dataset, test_dataset, val_dataset, train_dl, test_dl, val_dl
    return train_dataset, test_dataset, train_dl, test_dl


def set_epoch(loader, epoch):
    """Make `loader`'s next pass draw epoch `epoch` (batches, augmentations, worker seeds); call it every epoch."""
    sampler = loader.batch_sampler
    sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(sampler.stream_seed(2, epoch))

"""Tiny-ImageNet: ImageFolder(DATA_DIR/train) and ImageFolder(DATA_DIR/val) (val sorted into class folders)."""
import os

import torchvision

from core.data.common import ImageDataset, get_transforms
from core.data.semisup import dataset_desc
from core.utils.errors import UserError

DATA_DESC = dataset_desc('tiny-imagenet', 200, mean=[0.4802, 0.4481, 0.3975], std=[0.2302, 0.2265, 0.2262])


class _FolderSource:
    def __init__(self, folder, samples=None):
        self.folder = folder
        self.samples = samples if samples is not None else folder.samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.folder.loader(path).convert('RGB'), label


def per_class_split(labels, val_size, path='the training set'):
    """(validation, training) indices: round r takes every class's r-th image (docs/differences.md item 51)."""
    by_class = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    if val_size > len(labels) - len(by_class):
        raise UserError(f'{path}: {len(labels)} training images in {len(by_class)} classes cannot give a '
                        f'{val_size}-image validation split that leaves every class an image; lower --validation-size.')
    val = []
    for r in range(max(len(v) for v in by_class.values())):
        for c in sorted(by_class):
            if len(val) < val_size and r < len(by_class[c]) - 1:
                val.append(by_class[c][r])
    taken = set(val)
    return val, [i for i in range(len(labels)) if i not in taken]


def load_tinyimagenet(data_dir, use_augmentation='base', validation=False, val_size=1024):
    folders = {}
    for split in ('train', 'val'):
        path = os.path.join(data_dir, split)
        if not os.path.isdir(path):
            raise UserError(f'{path}: no such folder; Tiny-ImageNet needs {data_dir}/train and {data_dir}/val '
                            f'with one sub-folder per class.')
        folders[split] = torchvision.datasets.ImageFolder(path)
    train_tf, test_tf = get_transforms('tiny-imagenet', use_augmentation)
    samples = folders['train'].samples
    val_dataset = None
    if validation:
        val_idx, train_idx = per_class_split([label for _, label in samples], val_size, path=data_dir)
        val_dataset = ImageDataset([_FolderSource(folders['train'], [samples[i] for i in val_idx])], test_tf)
        samples = [samples[i] for i in train_idx]
    train = ImageDataset([_FolderSource(folders['train'], samples)], train_tf)
    test = ImageDataset([_FolderSource(folders['val'])], test_tf)
    return train, test, val_dataset, len(folders['train'].samples)

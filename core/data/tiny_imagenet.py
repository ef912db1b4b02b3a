"""Tiny-ImageNet (SPEC 3.3): ImageFolder(DATA_DIR/train) and ImageFolder(DATA_DIR/val), val already sorted into
class sub-folders. 64 x 64 images; no download."""
import os

import torchvision

from core.data.common import ImageDataset, get_transforms
from core.errors import UserError

DATA_DESC = {
    'data': 'tiny-imagenet',
    'classes': tuple(str(i) for i in range(200)),
    'num_classes': 200,
    'mean': [0.4802, 0.4481, 0.3975],
    'std': [0.2302, 0.2265, 0.2262],
}


class _FolderSource:
    """(PIL image, label) items of an ImageFolder, decoded on access."""

    def __init__(self, folder, samples=None):
        self.folder = folder
        self.samples = samples if samples is not None else folder.samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.folder.loader(path).convert('RGB'), label


def load_tinyimagenet(data_dir, use_augmentation='base', validation=False, val_size=1024):
    """(train dataset, test dataset, val dataset or None, base train size)."""
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
        val_dataset = ImageDataset([_FolderSource(folders['train'], samples[:val_size])], test_tf)
        samples = samples[val_size:]
    train = ImageDataset([_FolderSource(folders['train'], samples)], train_tf)
    test = ImageDataset([_FolderSource(folders['val'])], test_tf)
    return train, test, val_dataset, len(folders['train'].samples)


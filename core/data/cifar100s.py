"""cifar100s: the cifar100 train split plus generated data; the base data are read from the sibling folder
DATA_DIR/../cifar100 (e.g. ./data/cifar100s -> ./data/cifar100)."""
import os

from core.data.cifar100 import DATA_DESC
from core.data.semisup import load_semisup


def load_cifar100s(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024):
    """(train SemiSupervisedDataset, test dataset, val dataset or None)."""
    base_dir = os.path.join(os.path.dirname(os.path.normpath(data_dir)), 'cifar100')
    return load_semisup('cifar100', base_dir, DATA_DESC['num_classes'], use_augmentation, aux_data_filename,
                        validation, val_size)

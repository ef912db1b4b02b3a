"""cifar10s: the cifar10 train split plus generated data; the base data are read from the sibling folder
DATA_DIR/../cifar10 (e.g. ./data/cifar10s -> ./data/cifar10)."""
import os

from core.data.cifar10 import DATA_DESC
from core.data.semisup import load_semisup


def load_cifar10s(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024):
    """(train SemiSupervisedDataset, test dataset, val dataset or None)."""
    base_dir = os.path.join(os.path.dirname(os.path.normpath(data_dir)), 'cifar10')
    return load_semisup('cifar10', base_dir, DATA_DESC['num_classes'], use_augmentation, aux_data_filename,
                        validation, val_size)

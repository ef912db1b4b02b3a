"""svhns: the svhn train split plus generated data; the base data are read from the sibling folder
DATA_DIR/../svhn (e.g. ./data/svhns -> ./data/svhn)."""
import os

from core.data.semisup import load_semisup
from core.data.svhn import DATA_DESC


def load_svhns(data_dir, use_augmentation='base', aux_data_filename=None, validation=False, val_size=1024):
    """(train SemiSupervisedDataset, test dataset, val dataset or None)."""
    base_dir = os.path.join(os.path.dirname(os.path.normpath(data_dir)), 'svhn')
    return load_semisup('svhn', base_dir, DATA_DESC['num_classes'], use_augmentation, aux_data_filename,
                        validation, val_size)

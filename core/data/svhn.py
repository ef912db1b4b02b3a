"""SVHN: torchvision's train/test splits (label 10 -> 0) or DATA_DIR/{train,test}.npz (labels 0-9).

Images are kept NHWC like every other dataset here (torchvision's N x 3 x 32 x 32 is transposed once), so the
generated data need no transposition. No augmentation, whatever is asked (reference). The mean/std are the
CIFAR-10 values (reference quirk, docs/differences.md item 13; they only matter with --normalize).
"""
from core.data.semisup import load_plain

DATA_DESC = {
    'data': 'svhn',
    'classes': tuple(str(i) for i in range(10)),
    'num_classes': 10,
    'mean': [0.4914, 0.4822, 0.4465],
    'std': [0.2023, 0.1994, 0.2010],
}


def load_svhn(data_dir, use_augmentation='base', validation=False, val_size=1024):
    """(train dataset, test dataset, val dataset or None, base train size) read from data_dir."""
    return load_plain('svhn', data_dir, DATA_DESC['num_classes'], use_augmentation, validation, val_size)

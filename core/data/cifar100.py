"""CIFAR-100: torchvision's train/test splits or DATA_DIR/{train,test}.npz."""
from core.data.semisup import load_plain

DATA_DESC = {
    'data': 'cifar100',
    'classes': tuple(str(i) for i in range(100)),
    'num_classes': 100,
    'mean': [0.5071, 0.4865, 0.4409],
    'std': [0.2673, 0.2564, 0.2762],
}


def load_cifar100(data_dir, use_augmentation='base', validation=False, val_size=1024):
    """(train dataset, test dataset, val dataset or None, base train size) read from data_dir."""
    return load_plain('cifar100', data_dir, DATA_DESC['num_classes'], use_augmentation, validation, val_size)

"""CIFAR-10: torchvision's train/test splits or DATA_DIR/{train,test}.npz."""
from core.data.semisup import load_plain

DATA_DESC = {
    'data': 'cifar10',
    'classes': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'),
    'num_classes': 10,
    'mean': [0.4914, 0.4822, 0.4465],
    'std': [0.2023, 0.1994, 0.2010],
}


def load_cifar10(data_dir, use_augmentation='base', validation=False, val_size=1024):
    """(train dataset, test dataset, val dataset or None, base train size) read from data_dir."""
    return load_plain('cifar10', data_dir, DATA_DESC['num_classes'], use_augmentation, validation, val_size)

"""cifar100s: the cifar100 train split plus generated data; the base data are read from the sibling folder
DATA_DIR/../cifar100 (e.g. ./data/cifar100s -> ./data/cifar100)."""
from core.data.cifar100 import DATA_DESC
from core.data.semisup import semisup_loader

load_cifar100s = semisup_loader('cifar100', DATA_DESC['num_classes'])

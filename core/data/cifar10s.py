"""cifar10s: the cifar10 train split plus generated data; base data from DATA_DIR/../cifar10."""
from core.data.cifar10 import DATA_DESC
from core.data.semisup import semisup_loader

load_cifar10s = semisup_loader('cifar10', DATA_DESC['num_classes'])

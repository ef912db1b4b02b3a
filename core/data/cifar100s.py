"""cifar100s: the cifar100 train split plus generated data; base data from DATA_DIR/../cifar100."""
from core.data.cifar100 import DATA_DESC
from core.data.semisup import semisup_loader

load_cifar100s = semisup_loader('cifar100', DATA_DESC['num_classes'])

"""CIFAR-10: torchvision's train/test splits or DATA_DIR/{train,test}.npz."""
from core.data.semisup import dataset_desc, plain_loader

DATA_DESC = dataset_desc('cifar10', 10, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010],
                         classes=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                                  'truck'))
load_cifar10 = plain_loader('cifar10', DATA_DESC['num_classes'])

"""CIFAR-100: torchvision's train/test splits or DATA_DIR/{train,test}.npz."""
from core.data.semisup import dataset_desc, plain_loader

DATA_DESC = dataset_desc('cifar100', 100, mean=[0.5071, 0.4865, 0.4409], std=[0.2673, 0.2564, 0.2762])
load_cifar100 = plain_loader('cifar100', DATA_DESC['num_classes'])

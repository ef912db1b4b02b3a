"""SVHN (NHWC, labels 0-9), never augmented as the reference; CIFAR-10's mean/std, a reference quirk kept
(docs/differences.md item 13; only --normalize reads them)."""
from core.data.semisup import dataset_desc, plain_loader

DATA_DESC = dataset_desc('svhn', 10, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010])
load_svhn = plain_loader('svhn', DATA_DESC['num_classes'])

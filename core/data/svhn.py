"""SVHN: torchvision's train/test splits (label 10 -> 0) or DATA_DIR/{train,test}.npz (labels 0-9).

Images are kept NHWC like every other dataset here (torchvision's N x 3 x 32 x 32 is transposed once), so the
generated data need no transposition. No augmentation, whatever is asked (reference). The mean/std are the
CIFAR-10 values (reference quirk, docs/differences.md item 13; they only matter with --normalize).
"""
from core.data.semisup import dataset_desc, plain_loader

DATA_DESC = dataset_desc('svhn', 10, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010])
load_svhn = plain_loader('svhn', DATA_DESC['num_classes'])

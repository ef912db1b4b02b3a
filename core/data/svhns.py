"""svhns: the svhn train split plus generated data; the base data are read from the sibling folder
DATA_DIR/../svhn (e.g. ./data/svhns -> ./data/svhn)."""
from core.data.semisup import semisup_loader
from core.data.svhn import DATA_DESC

load_svhns = semisup_loader('svhn', DATA_DESC['num_classes'])

"""svhns: the svhn train split plus generated data; base data from DATA_DIR/../svhn."""
from core.data.semisup import semisup_loader
from core.data.svhn import DATA_DESC

load_svhns = semisup_loader('svhn', DATA_DESC['num_classes'])

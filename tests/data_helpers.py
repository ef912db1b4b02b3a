"""Shared synthetic data of tests/test_data.py and tests/test_data_sampler.py.

Every image is constant per channel and encodes an id (channel 0 = id // 256, channel 1 = id % 256, channel 2 =
source tag), so a loaded tensor tells which file and which row it came from.
"""
import numpy as np

from core.data import load_data

REAL, TEST, AUX = 10, 20, 30  # channel-2 tags


def make_images(ids, tag, size=32):
    x = np.zeros((len(ids), size, size, 3), dtype=np.uint8)
    x[..., 0] = (np.asarray(ids) // 256)[:, None, None]
    x[..., 1] = (np.asarray(ids) % 256)[:, None, None]
    x[..., 2] = tag
    return x


def decode(x):
    """Batch of 3 x H x W tensors in [0, 1] -> (ids, tags) read at the centre pixel."""
    p = (x[:, :, 16, 16] * 255).round().long()
    return (p[:, 0] * 256 + p[:, 1]).tolist(), p[:, 2].tolist()


def real_label(i):
    return i % 10


def aux_label(i):
    return (3 * i + 7) % 10  # differs from real_label, so a wrong label source shows


def write_root(tmp_path):
    """tmp/data/cifar10/{train,test}.npz (60 + 20 images) and tmp/aux.npz (200 generated images)."""
    d = tmp_path / 'data' / 'cifar10'
    d.mkdir(parents=True)
    ids = np.arange(60)
    np.savez(d / 'train.npz', image=make_images(ids, REAL), label=real_label(ids))
    np.savez(d / 'test.npz', image=make_images(np.arange(20), TEST), label=np.arange(20) % 10)
    aux = np.arange(200)
    np.savez(tmp_path / 'aux.npz', image=make_images(aux, AUX), label=aux_label(aux))
    return tmp_path


def semisup(root, **kw):
    args = dict(batch_size=10, batch_size_test=8, num_workers=0, use_augmentation=False,
                aux_data_filename=str(root / 'aux.npz'), unsup_fraction=0.7, validation=True, val_size=8)
    args.update(kw)
    return load_data(str(root / 'data' / 'cifar10s'), **args)

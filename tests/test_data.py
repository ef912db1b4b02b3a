"""Data layer: sampler semantics, validation split, generated data, bad input, DDP split, determinism.

Synthetic data only (in tmp_path): every image is constant per channel and encodes an id (channel 0 = id // 256,
channel 1 = id % 256, channel 2 = source tag), so a loaded tensor tells which file and which row it came from.
"""
import math

import numpy as np
import pytest
import torch

from core.data import SEMISUP_DATASETS, augment_arg, get_data_info, load_data, set_epoch, validate_unsup_fraction
from core.data import common as data_common
from core.data.convert import convert
from core.data.npz import NpyMember
from core.data.semisup import SemiSupervisedSampler
from core.errors import UserError

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


@pytest.fixture
def root(tmp_path):
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


# ----------------------------------------------------------------------------------------------------------------
# Dataset info
# ----------------------------------------------------------------------------------------------------------------

def test_data_info_by_basename():
    # parent names must not matter (docs/differences.md item 14)
    info = get_data_info('/datasets/svhn_runs/cifar100/cifar10s/')
    assert info['data'] == 'cifar10s' and info['num_classes'] == 10
    assert info['mean'] == [0.4914, 0.4822, 0.4465] and info['std'] == [0.2023, 0.1994, 0.2010]
    assert get_data_info('./data/cifar100s')['num_classes'] == 100
    # CIFAR-10 values (docs/differences.md item 13)
    assert get_data_info('./data/svhn')['mean'] == [0.4914, 0.4822, 0.4465]
    assert get_data_info('./data/tiny-imagenet')['num_classes'] == 200
    get_data_info('./data/cifar10')['data'] = 'x'
    assert get_data_info('./data/cifar10')['data'] == 'cifar10'  # no shared mutable table
    with pytest.raises(UserError, match='unknown dataset'):
        get_data_info('./data/mnist')


# ----------------------------------------------------------------------------------------------------------------
# Sampler
# ----------------------------------------------------------------------------------------------------------------

def test_sampler_sizes_match_reference_examples():
    s = SemiSupervisedSampler(range(48976), range(48976, 100000), 512, 0.7, math.ceil(50000 / 512))
    assert (s.unsup_bs, s.sup_bs, len(s)) == (358, 154, 98)
    s = SemiSupervisedSampler(range(48976), range(48976, 100000), 1024, 0.7, math.ceil(50000 / 1024))
    assert (s.unsup_bs, s.sup_bs, len(s)) == (716, 308, 49)


def test_sampler_batch_composition_and_restart():
    sup, unsup = list(range(7)), list(range(100, 150))
    s = SemiSupervisedSampler(sup, unsup, batch_size=10, unsup_fraction=0.7, num_batches=5, seed=3)
    batches = [np.array([i for i, _ in b]) for b in s]
    assert len(batches) == 5 and all(len(b) == 10 for b in batches)
    n_sup = [int((b < 100).sum()) for b in batches]
    assert n_sup == [3, 3, 1, 3, 3]  # slices 3, 3, 1 of a 7-pool pass, then a new permutation
    first_pass = np.concatenate([b[b < 100] for b in batches[:3]])
    assert sorted(first_pass) == sup  # a permutation of the labelled pool, without replacement
    assert all(set(b[b >= 100]) <= set(unsup) for b in batches)


def test_sampler_epoch_length_from_dataset_size(root):
    train, *_ , train_loader, _, _ = semisup(root, batch_size=16)
    assert train.dataset_size == 60  # base split size BEFORE validation removal
    assert len(train.sup_indices) == 52 and len(train.unsup_indices) == 200
    assert len(train_loader) == math.ceil(60 / 16)
    sizes = [len(y) for _, y in train_loader]
    assert sizes == [16] * 4


def test_sampler_negative_fraction_merges_pools():
    sup, unsup = list(range(6)), list(range(10, 14))
    s = SemiSupervisedSampler(sup, unsup, batch_size=5, unsup_fraction=-1, num_batches=2, seed=0)
    assert (s.unsup_bs, s.sup_bs) == (0, 5)
    idx = [i for b in s for i, _ in b]
    assert sorted(idx) == sup + unsup  # 2 x 5 = the whole merged pool, without replacement


def test_sampler_merged_pool_by_hand():
    """--unsup-fraction -1: one pool 0..9 (6 real, 4 generated; adjacent ranges stay a lazy range), batches of
    5 without replacement: batches 1-2 are one pass over all 10 indices, batch 3 starts a new pass, and the
    last batch of a pass is short when 5 does not divide the pool (pool 0..11: 5, 5, 2)."""
    s = SemiSupervisedSampler(range(6), range(6, 10), batch_size=5, unsup_fraction=-1, num_batches=3, seed=0)
    assert s.sup_indices == range(10) and len(s.unsup_indices) == 0 and (s.sup_bs, s.unsup_bs) == (5, 0)
    b = [sorted(i for i, _ in batch) for batch in s]
    assert [len(x) for x in b] == [5, 5, 5]
    assert sorted(b[0] + b[1]) == list(range(10))          # one pass: each index once
    assert len(set(b[2])) == 5 and set(b[2]) <= set(range(10))
    s = SemiSupervisedSampler(range(8), range(8, 12), batch_size=5, unsup_fraction=-0.5, num_batches=3, seed=1)
    b = [[i for i, _ in batch] for batch in s]
    assert [len(x) for x in b] == [5, 5, 2] and sorted(sum(b, [])) == list(range(12))
    s = SemiSupervisedSampler([0, 1, 2], [7, 9], batch_size=5, unsup_fraction=-1, num_batches=1, seed=0)
    assert sorted(i for i, _ in next(iter(s))) == [0, 1, 2, 7, 9]   # index lists are concatenated


def test_sampler_merged_pool_memory_does_not_grow_with_the_generated_data():
    """A 50M-image merged pool: an epoch of 98 x 512 draws ~50k distinct indices without any pool-sized array."""
    import tracemalloc
    tracemalloc.start()
    s = SemiSupervisedSampler(range(48976), range(48976, 50_000_000), 512, -1, math.ceil(50000 / 512), seed=2)
    idx = np.concatenate([[i for i, _ in b] for b in s])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(idx) == 98 * 512 == len(np.unique(idx)) and idx.max() < 50_000_000
    assert (idx >= 48976).mean() > 0.99                    # 99.9% of the pool is generated
    assert peak < 50 * 2 ** 20                             # a 50M int64 index array alone would be 400 MB


def test_sampler_zero_fraction_uses_only_labelled():
    s = SemiSupervisedSampler(range(9), range(100, 110), batch_size=4, unsup_fraction=0.0, num_batches=3)
    idx = [i for b in s for i, _ in b]
    assert len(idx) == 9 and max(idx) < 9  # the last slice of the pass is short (1 image)


# ----------------------------------------------------------------------------------------------------------------
# Splits, labels, memory map
# ----------------------------------------------------------------------------------------------------------------

def test_validation_images_never_in_training(root):
    train, test, val, train_loader, test_loader, val_loader = semisup(root, use_augmentation=True)
    val_ids = {i for x, _ in val_loader for i in decode(x)[0]}
    assert val_ids == set(range(8)) and len(val) == 8
    x, _ = next(iter(val_loader))
    assert torch.equal(x[0], torch.from_numpy(make_images([0], REAL)[0]).permute(2, 0, 1).float() / 255)  # no aug
    for epoch in range(3):
        set_epoch(train_loader, epoch)
        for x, _ in train_loader:
            ids, tags = decode(x)
            assert all(i >= 8 for i, t in zip(ids, tags) if t == REAL)
    assert {decode(x)[1][0] for x, _ in test_loader} == {TEST}
    assert len(test) == 20 and [len(y) for _, y in test_loader] == [8, 8, 4]  # last partial batch kept


def test_generated_labels_are_used(root):
    train, *_, train_loader, _, _ = semisup(root)
    seen = 0
    for x, y in train_loader:
        for (i, t), label in zip(zip(*decode(x)), y.tolist()):
            assert label == (aux_label(i) if t == AUX else real_label(i))
            seen += t == AUX
    assert seen == 6 * 7  # ceil(60 / 10) = 6 batches of int(10 * 0.7) = 7 generated images
    assert train[train.unsup_indices[5]][1] == aux_label(5)


def _rss_mib():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:')) / 1024


def test_generated_data_is_read_lazily_from_the_file(tmp_path, root):
    train = semisup(root)[0]
    images = train.generated.parts[0].images
    assert isinstance(images, NpyMember) and images.path == str(root / 'aux.npz')  # no copy in RAM
    n = 30000  # 88 MiB of generated images: reading them all must not raise RSS (an in-RAM copy or mmap would)
    path = tmp_path / 'big.npz'
    np.savez(path, image=np.broadcast_to(make_images([7], AUX), (n, 32, 32, 3)), label=np.zeros(n, np.int64))
    rss = _rss_mib()
    train = semisup(root, aux_data_filename=str(path))[0]
    for i in train.unsup_indices[::3]:
        train.generated[i - train.unsup_indices[0]]
    assert _rss_mib() - rss < 20
    assert decode(train[train.unsup_indices[-1]][0][None]) == ([7], [AUX])


def test_folder_of_parts_and_comma_list(root):
    parts = root / 'parts'
    parts.mkdir()
    for k in range(3):
        ids = np.arange(k * 10, k * 10 + 10)
        np.savez(parts / f'part{k}.npz', image=make_images(ids, AUX), label=aux_label(ids))
    train = semisup(root, aux_data_filename=str(parts))[0]
    assert len(train.unsup_indices) == 30
    assert [decode(train[j][0][None])[0][0] for j in train.unsup_indices] == list(range(30))  # sorted part order
    listed = f'{parts / "part2.npz"},{root / "aux.npz"}'
    train = semisup(root, aux_data_filename=listed)[0]
    assert len(train.unsup_indices) == 210
    assert decode(train[train.unsup_indices[10]][0][None])[0][0] == 0  # second file starts after the first


def test_plain_loader_sequential_without_shuffle(root):
    train, test, train_loader, test_loader = load_data(str(root / 'data' / 'cifar10'), batch_size=25,
                                                       num_workers=0, use_augmentation=False, shuffle_train=False)
    assert len(train) == 60 and [len(y) for _, y in train_loader] == [25, 25, 10]
    assert [i for x, _ in train_loader for i in decode(x)[0]] == list(range(60))


def test_svhn_from_npz_and_aux_layout(tmp_path):
    d = tmp_path / 'svhn'
    d.mkdir()
    np.savez(d / 'train.npz', image=make_images(np.arange(30), REAL), label=np.arange(30) % 10)
    np.savez(d / 'test.npz', image=make_images(np.arange(5), TEST), label=np.arange(5))
    np.savez(tmp_path / 'aux.npz', image=make_images(np.arange(40), AUX), label=aux_label(np.arange(40)))
    train, test, _, _ = load_data(str(tmp_path / 'svhns'), batch_size=10, num_workers=0, use_augmentation=True,
                                  aux_data_filename=str(tmp_path / 'aux.npz'), unsup_fraction=0.5)
    x, y = train[train.unsup_indices[3]]
    assert x.shape == (3, 32, 32) and decode(x[None]) == ([3], [AUX]) and y == aux_label(3)  # SVHN: never augmented
    assert decode(test[0][0][None])[1] == [TEST]  # svhns tests on the test split (docs/differences.md item 12 fixed)


def test_augmentations_off_by_default_and_named(root):
    for aug in ('none', 'base', 'cutout', 'autoaugment', 'randaugment', True, False):
        train = load_data(str(root / 'data' / 'cifar10'), num_workers=0, use_augmentation=aug)[0]
        x, _ = train[(0, 123)]
        assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(UserError, match='unknown augmentation'):
        load_data(str(root / 'data' / 'cifar10'), num_workers=0, use_augmentation='mixup')
    assert [augment_arg(t) for t in ('True', 'no', '1', 'base', 'AutoAugment')] == [True, False, True, 'base',
                                                                                   'autoaugment']


def test_convert_roundtrip(tmp_path):
    ids = np.arange(50)
    np.savez_compressed(tmp_path / 'c.npz', image=make_images(ids, AUX), label=aux_label(ids))
    convert(str(tmp_path / 'c.npz'), str(tmp_path / 'u.npz'))
    with np.load(tmp_path / 'u.npz') as f:
        assert np.array_equal(f['image'], make_images(ids, AUX)) and np.array_equal(f['label'], aux_label(ids))
    with pytest.raises(UserError, match='already exists'):
        convert(str(tmp_path / 'c.npz'), str(tmp_path / 'u.npz'))


# ----------------------------------------------------------------------------------------------------------------
# Determinism and DDP
# ----------------------------------------------------------------------------------------------------------------

def _epoch(loader, epoch):
    set_epoch(loader, epoch)
    return [(x, y) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_set_epoch_is_deterministic_and_resumable(root):
    loader = semisup(root, use_augmentation=True, seed=5)[3]
    e0, e1, e2 = _epoch(loader, 0), _epoch(loader, 1), _epoch(loader, 2)
    assert not _same(e1, e2)
    resumed = semisup(root, use_augmentation=True, seed=5)[3]  # a new process resuming at epoch 2
    torch.manual_seed(999)
    np.random.seed(999)  # the global RNGs play no part
    assert _same(_epoch(resumed, 2), e2) and _same(_epoch(resumed, 0), e0)
    assert not _same(_epoch(semisup(root, use_augmentation=True, seed=6)[3], 2), e2)


@pytest.mark.parametrize('batch_size', [10, 11])
def test_ddp_shares_partition_the_global_batch(batch_size):
    kw = dict(sup_indices=range(40), unsup_indices=range(40, 140), batch_size=batch_size, unsup_fraction=0.7,
              num_batches=6, seed=2)
    single = SemiSupervisedSampler(**kw)
    ranks = [SemiSupervisedSampler(**kw, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 4):
        for s in [single] + ranks:
            s.set_epoch(epoch)
        for full, a, b in zip(single, *ranks):
            assert sorted(a + b) == sorted(full)  # union == the single-process batch (indices and item seeds)
            assert len(set(a + b)) == len(full) == batch_size  # disjoint
            assert (len(a), len(b)) == (math.ceil(batch_size / 2), batch_size // 2)


def test_workers_give_the_same_batches(root):
    a = _epoch(semisup(root, use_augmentation=True, num_workers=0)[3], 1)
    b = _epoch(semisup(root, use_augmentation=True, num_workers=2)[3], 1)
    assert _same(a, b)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the problem, raised by load_data before any training
# ----------------------------------------------------------------------------------------------------------------

def _bad_aux(root, name, **arrays):
    path = root / name
    np.savez(path, **arrays)
    return str(path)


IMG = make_images(np.arange(4), AUX)
BAD_AUX = {
    'no_image': (dict(label=np.zeros(4, np.int64)), "no array 'image'"),
    'no_label': (dict(image=IMG), "no array 'label'"),
    'nchw': (dict(image=IMG.transpose(0, 3, 1, 2).copy(), label=np.zeros(4, np.int64)), 'NCHW'),
    'size': (dict(image=np.zeros((4, 28, 28, 3), np.uint8), label=np.zeros(4, np.int64)), '28x28'),
    'channels': (dict(image=np.zeros((4, 32, 32, 1), np.uint8), label=np.zeros(4, np.int64)), '1 channels'),
    'dtype': (dict(image=IMG.astype(np.float32), label=np.zeros(4, np.int64)), 'dtype float32'),
    'label_high': (dict(image=IMG, label=np.array([0, 1, 10, 2])), r'label 10 outside \[0, 10\)'),
    'label_neg': (dict(image=IMG, label=np.array([0, -1, 1, 2])), r'label -1 outside'),
    'count': (dict(image=IMG, label=np.zeros(3, np.int64)), '4 images but 3 labels'),
}


@pytest.mark.parametrize('case', sorted(BAD_AUX))
def test_bad_generated_file(root, case):
    arrays, message = BAD_AUX[case]
    path = _bad_aux(root, f'{case}.npz', **arrays)
    with pytest.raises(UserError, match=message) as e:
        semisup(root, aux_data_filename=path)
    assert path in str(e.value) and '\n' not in str(e.value)


def test_bad_inputs_paths_and_flags(root):
    with pytest.raises(UserError, match='no such file or folder'):
        semisup(root, aux_data_filename=str(root / 'missing.npz'))
    (root / 'empty').mkdir()
    with pytest.raises(UserError, match='holds no'):
        semisup(root, aux_data_filename=str(root / 'empty'))
    np.savez_compressed(root / 'z.npz', image=IMG, label=np.zeros(4, np.int64))
    with pytest.raises(UserError, match='python -m core.data.convert'):
        semisup(root, aux_data_filename=str(root / 'z.npz'))
    for name in SEMISUP_DATASETS:
        with pytest.raises(UserError, match='needs generated data'):
            load_data(str(root / 'data' / name), num_workers=0, aux_data_filename=None, unsup_fraction=0.7)
    for bad in (1.0, 1.5, float('nan'), float('-inf')):
        with pytest.raises(UserError, match='finite number below 1'):
            validate_unsup_fraction(bad)
    assert validate_unsup_fraction(0.0) == 0.0 and validate_unsup_fraction(0.7) == 0.7
    assert validate_unsup_fraction(-0.1) == -0.1 and validate_unsup_fraction(-1) == -1.0   # the merged pool
    with pytest.raises(UserError, match='finite number below 1'):
        semisup(root, unsup_fraction=1.0)


def test_missing_base_data_names_paths_and_command(tmp_path, monkeypatch):
    def offline(*args):
        raise OSError('network unreachable')
    monkeypatch.setattr(data_common, '_download', offline)
    with pytest.raises(UserError) as e:
        load_data(str(tmp_path / 'cifar10'), num_workers=0)
    msg = str(e.value)
    assert str(tmp_path / 'cifar10' / 'train.npz') in msg and 'cifar-10-batches-py' in msg and 'make_npz.py' in msg


def test_corrupt_torchvision_folder(tmp_path):
    (tmp_path / 'cifar10' / 'cifar-10-batches-py').mkdir(parents=True)
    with pytest.raises(UserError, match='cannot read cifar10 train split') as e:
        load_data(str(tmp_path / 'cifar10'), num_workers=0)
    assert '\n' not in str(e.value)


def test_svhn_torchvision_files_are_transposed_to_nhwc(tmp_path, monkeypatch):
    class FakeSVHN:  # torchvision keeps SVHN as N x 3 x 32 x 32
        def __init__(self, root, split, download):
            n = 12 if split == 'train' else 4
            self.data = make_images(np.arange(n), REAL).transpose(0, 3, 1, 2)
            self.labels = np.arange(n) % 10
    d = tmp_path / 'svhn'
    d.mkdir()
    for split in ('train', 'test'):
        (d / f'{split}_32x32.mat').touch()
    monkeypatch.setitem(data_common._TORCHVISION, 'svhn', (FakeSVHN, '{split}_32x32.mat', 'split'))
    train, test, _, _ = load_data(str(d), batch_size=4, num_workers=0)
    assert len(train) == 12 and len(test) == 4
    assert decode(train[5][0][None]) == ([5], [REAL]) and train[5][1] == 5


def test_tiny_imagenet_folders(tmp_path):
    from PIL import Image
    for split in ('train', 'val'):
        for c in ('n01', 'n02'):
            (tmp_path / 'tiny-imagenet' / split / c).mkdir(parents=True)
            for k in range(3):
                Image.new('RGB', (64, 64), (k, 0, 0)).save(tmp_path / 'tiny-imagenet' / split / c / f'{k}.png')
    train, test, val, *_ = load_data(str(tmp_path / 'tiny-imagenet'), batch_size=2, num_workers=0,
                                     validation=True, val_size=2)
    assert (len(train), len(test), len(val)) == (4, 6, 2)
    x, y = train[(0, 1)]
    assert x.shape == (3, 64, 64) and y in (0, 1)
    # one validation image per class (not both of class n01, as the first 2 files would be)
    assert sorted(val[i][1] for i in range(2)) == [0, 1] and sorted(train[i][1] for i in range(4)) == [0, 0, 1, 1]
    with pytest.raises(UserError, match='every class'):
        load_data(str(tmp_path / 'tiny-imagenet'), num_workers=0, validation=True, val_size=5)


def test_tiny_imagenet_per_class_split_by_hand():
    from core.data.tiny_imagenet import per_class_split
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert per_class_split(labels, 5) == ([0, 4, 6, 1, 7], [2, 3, 5, 8])
    assert per_class_split(labels, 6) == ([0, 4, 6, 1, 7, 2], [3, 5, 8])   # class 1 keeps image 5
    # Tiny-ImageNet's shape: 200 classes x 500, 1024 validation images -> 5 or 6 per class, 494-495 kept
    val, train = per_class_split([c for c in range(200) for _ in range(500)], 1024)
    counts = np.bincount(np.array(val) // 500, minlength=200)
    assert len(val) == 1024 and set(counts.tolist()) == {5, 6} and counts[:24].tolist() == [6] * 24
    assert len(train) == 100000 - 1024 and not set(val) & set(train)


def test_tiny_images_pickle(root):
    import pickle
    ids = np.arange(30)
    with open(root / 'ti.pickle', 'wb') as f:
        pickle.dump({'data': make_images(ids, AUX), 'extrapolated_targets': aux_label(ids)}, f)
    train = semisup(root, aux_data_filename=str(root / 'ti.pickle'))[0]
    x, y = train[train.unsup_indices[4]]
    assert decode(x[None]) == ([4], [AUX]) and y == aux_label(4)
    with open(root / 'bad.pickle', 'wb') as f:
        pickle.dump({'data': make_images(ids, AUX)}, f)
    with pytest.raises(UserError, match='extrapolated_targets'):
        semisup(root, aux_data_filename=str(root / 'bad.pickle'))

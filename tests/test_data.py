"""Data layer: dataset info, validation split, generated data, base data (npz, torchvision, Tiny-ImageNet), bad
input. The sampler, determinism and DDP shares are in tests/test_data_sampler.py.

Synthetic data only (tests/data_helpers.py, in tmp_path): every image is constant per channel and encodes an id
(channel 0 = id // 256, channel 1 = id % 256, channel 2 = source tag), so a loaded tensor tells which file and
which row it came from.
"""
import os

import numpy as np
import pytest
import torch
from data_helpers import AUX, REAL, TEST, aux_label, decode, make_images, real_label, semisup, write_root
from script_runner import run_script

from core.data import SEMISUP_DATASETS, augment_arg, get_data_info, load_data, set_epoch, validate_unsup_fraction
from core.data import common as data_common
from core.data.convert import convert
from core.data.npz import NpyMember
from core.utils.errors import UserError


@pytest.fixture
def root(tmp_path):
    """tmp/data/cifar10/{train,test}.npz (60 + 20 images) and tmp/aux.npz (200 generated images)."""
    return write_root(tmp_path)


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


def test_damaged_generated_file_named_once_verified_files_are_remembered(root, capsys):
    """A changed byte inside the image member (the zip still opens, np.load would say 'Bad CRC-32'): one line naming
    the file and the member; an intact file is read once, its record beside it makes the next start skip the pass,
    and a file changed since is verified again."""
    path = str(root / 'aux.npz')
    semisup(root)
    assert 'Verifying the CRC-32 of ' + path in capsys.readouterr().out and os.path.isfile(path + '.verified')
    semisup(root)
    assert 'Verifying' not in capsys.readouterr().out
    with open(path, 'r+b') as f:   # 1,000 image bytes, well inside the member's data
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(1000))
    os.utime(path, ns=(0, 0))
    with pytest.raises(UserError) as e:
        semisup(root)
    assert str(e.value).startswith(f'{path}: member image.npy is damaged') and '\n' not in str(e.value)
    assert 'CRC' in str(e.value) and os.path.isfile(path)


def test_damaged_real_data_is_named_too(root):
    path = root / 'data' / 'cifar10' / 'test.npz'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f'^{path}: member image.npy is damaged'):
        semisup(root)


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



def test_make_npz_writes_both_splits_once(tmp_path, monkeypatch, capsys):
    """The command the message above names: scripts/make_npz.py DATA_DIR writes the two .npz files from what
    torchvision gives (here a stand-in for its download), which the data layer then reads; it never overwrites."""
    def download(name, data_dir, split):
        n = 12 if split == 'train' else 4
        return make_images(np.arange(n), REAL), np.arange(n) % 10
    monkeypatch.setattr(data_common, '_download', download)
    script = data_common.MAKE_NPZ_CMD.split()[1]
    d = tmp_path / 'cifar10'
    assert run_script(script, [d]) == 0
    train, test, _, _ = load_data(str(d), batch_size=4, num_workers=0, use_augmentation=False)
    assert len(train) == 12 and len(test) == 4 and decode(train[5][0][None]) == ([5], [REAL]) and train[5][1] == 5
    before = (d / 'train.npz').stat().st_mtime_ns
    assert run_script(script, [d]) == 2 and 'exists' in capsys.readouterr().err
    assert run_script(script, [tmp_path / 'mnist']) == 2 and not (tmp_path / 'mnist').exists()
    assert (d / 'train.npz').stat().st_mtime_ns == before   # read: verified once (FILE.verified beside it)
    assert sorted(os.listdir(d)) == ['test.npz', 'test.npz.verified', 'train.npz', 'train.npz.verified']

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

"""Data layer: the sampler's semantics, determinism across epochs and resumes, DDP shares, worker processes.

Synthetic data only (tests/data_helpers.py, in tmp_path).
"""
import math

import numpy as np
import pytest
import torch
from data_helpers import semisup, write_root

from core.data import set_epoch
from core.data.semisup import SemiSupervisedSampler


@pytest.fixture
def root(tmp_path):
    """tmp/data/cifar10/{train,test}.npz (60 + 20 images) and tmp/aux.npz (200 generated images)."""
    return write_root(tmp_path)


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

"""CutMix: numpy RNG order, the pasted box, label weights equal to the box area, x4 expansion."""
import numpy as np
import pytest
import torch

from core.data.cutmix import cutmix, cutmix_expand

B, C, H, W = 5, 3, 6, 8   # H != W catches swapped axes
K = 7


def _batch():
    # image i is constant (i + 1) / 10 so every pixel tells which image it came from
    x = torch.arange(1, B + 1, dtype=torch.float32).view(B, 1, 1, 1).div(10).expand(B, C, H, W).clone()
    y = torch.tensor([0, 3, 3, 6, 1])
    return x, y


def _hand_box(seed):
    """The reference's CutMix steps 1-6, written out: lambda, centre (row, col), box, lambda', permutation."""
    np.random.seed(seed)
    lam = np.random.beta(1.0, 1.0)
    r = np.sqrt(1 - lam)
    cut_w, cut_h = int(W * r), int(H * r)
    i, j = np.random.randint(H), np.random.randint(W)
    y1, x1 = np.clip(i - cut_h // 2, 0, H), np.clip(j - cut_w // 2, 0, W)
    h, w = np.clip(i + cut_h // 2, 0, H) - y1, np.clip(j + cut_w // 2, 0, W) - x1
    return int(y1), int(x1), int(h), int(w), np.random.permutation(B)


@pytest.mark.parametrize('seed', range(12))
def test_cutmix_box_source_and_label_weights(seed):
    x, y = _batch()
    y1, x1, h, w, perm = _hand_box(seed)
    np.random.seed(seed)
    x_mix, y_mix = cutmix(x, y, K)
    assert x_mix.shape == (B, C, H, W) and y_mix.shape == (B, K) and y_mix.dtype == torch.float32
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y1:y1 + h, x1:x1 + w] = True
    area = h * w / (H * W)
    for n in range(B):
        assert torch.equal(x_mix[n][:, mask], x[perm[n]][:, mask])     # the box comes from the permuted batch
        assert torch.equal(x_mix[n][:, ~mask], x[n][:, ~mask])
        expected = torch.zeros(K)
        expected[y[n]] += 1 - area
        expected[y[perm[n]]] += area
        assert torch.allclose(y_mix[n], expected, atol=1e-6)
    assert torch.allclose(y_mix.sum(1), torch.ones(B), atol=1e-6)
    assert y_mix.min() >= 0 and y_mix.max() <= 1
    assert np.random.rand() == pytest.approx(_after(seed))   # exactly 4 draws consumed


def _after(seed):
    _hand_box(seed)
    return np.random.rand()


def test_cutmix_does_not_modify_input():
    x, y = _batch()
    x0 = x.clone()
    np.random.seed(0)
    cutmix(x, y, K)
    assert torch.equal(x, x0)


def test_cutmix_expand_four_independent_copies():
    x, y = _batch()
    np.random.seed(3)
    xs, ys = cutmix_expand(x, y, K)
    assert xs.shape == (4 * B, C, H, W) and ys.shape == (4 * B, K)
    assert torch.allclose(ys.sum(1), torch.ones(4 * B), atol=1e-6)
    assert ys.min() >= 0 and ys.max() <= 1
    np.random.seed(3)
    for c in range(4):   # copy c is the c-th call on the same numpy stream, on the same original batch
        xc, yc = cutmix(x, y, K)
        assert torch.equal(xs[c * B:(c + 1) * B], xc) and torch.equal(ys[c * B:(c + 1) * B], yc)

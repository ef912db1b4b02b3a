"""CutMix with soft labels and the x4 batch expansion of --CutMix (the reference's; docs/differences.md item 26).

Paper: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
ICCV 2019; used for adversarial training by Gowal et al. / Rebuffi et al. (2021).

Randomness comes from numpy's global generator, consumed per copy in the reference's order:
lambda ~ Beta(alpha, alpha), centre row i, centre column j, then the batch permutation.
"""
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['cutmix', 'cutmix_expand']


def cutmix(x, y, num_classes, alpha=1.0):
    """One CutMix copy of a batch: paste a box of a permuted batch, mix the labels by area.

    Args:
        x: (B, C, H, W) images in [0, 1] (not modified).
        y: (B,) int64 labels.
        num_classes: K.
        alpha: Beta(alpha, alpha) parameter of the mixing ratio. Default 1.0.
    Returns:
        x_mix (B, C, H, W) and soft labels (B, K) float32: lam' * onehot(y) + (1 - lam') * onehot(y[perm]),
        where 1 - lam' is the area fraction of the pasted box [y1, y1+h) x [x1, x1+w).
    """
    batch_size, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    lam = np.random.beta(alpha, alpha)
    ratio = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * ratio), int(height * ratio)
    ci = np.random.randint(height)
    cj = np.random.randint(width)
    y1 = int(np.clip(ci - cut_h // 2, 0, height))
    x1 = int(np.clip(cj - cut_w // 2, 0, width))
    h = int(np.clip(ci + cut_h // 2, 0, height)) - y1
    w = int(np.clip(cj + cut_w // 2, 0, width)) - x1
    lam = 1.0 - h * w / (height * width)
    perm = torch.from_numpy(np.random.permutation(batch_size)).to(y.device)

    x_mix = x.clone()
    x_mix[..., y1:y1 + h, x1:x1 + w] = x[perm][..., y1:y1 + h, x1:x1 + w]
    onehot = F.one_hot(y, num_classes).float()
    y_mix = lam * onehot + (1.0 - lam) * onehot[perm]
    return x_mix, y_mix


def cutmix_expand(x, y, num_classes, copies=4, alpha=1.0):
    """`copies` independent CutMix copies of the same batch, concatenated (the reference uses 4).

    Args:
        x: (B, C, H, W) images; y: (B,) int64 labels; num_classes: K; copies: default 4.
    Returns:
        (copies*B, C, H, W) images and (copies*B, K) float32 soft labels.
    """
    pairs = [cutmix(x, y, num_classes, alpha) for _ in range(copies)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

"""CutMix (Yun et al., 2019), soft labels, x4 expansion, numpy's global generator (docs/differences.md item 26)."""
import numpy as np
import torch
import torch.nn.functional as F


def cutmix(x, y, num_classes, alpha=1.0):
    """x (B, C, H, W) with a box of x[perm] pasted, and (B, K) float32 labels mixed by the box's area."""
    batch_size, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    lam = np.random.beta(alpha, alpha)
    ratio = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * ratio), int(height * ratio)
    ci, cj = np.random.randint(height), np.random.randint(width)  # row first, as the reference
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
    pairs = [cutmix(x, y, num_classes, alpha) for _ in range(copies)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

"""Pre-activation ResNet for Tiny-ImageNet (64x64 inputs, 200 classes).

Identical to `preact_resnet.PreActResNet` (same modules, same state-dict keys) except that the pooling before the
linear layer is AdaptiveAvgPool2d(1), so any input size >= 8x8 works.
"""
import torch.nn as nn

from .preact_resnet import PREACT_RESNET_CONFIGS, PreActResNet


class TIPreActResNet(PreActResNet):
    """PreActResNet with global average pooling. Input (N, 3, H, W); output logits (N, num_classes)."""

    def __init__(self, block, num_blocks, num_classes=200):
        super().__init__(block, num_blocks, num_classes=num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        out = self.avgpool(self.features(x))
        out = out.reshape(out.size(0), -1)
        return self.linear(out)


def ti_preact_resnet(name, num_classes=200):
    """Build `preact-resnet18/34/50/101` for Tiny-ImageNet with `num_classes` outputs (default 200)."""
    if name not in PREACT_RESNET_CONFIGS:
        raise ValueError(f'Only {", ".join(PREACT_RESNET_CONFIGS)} are supported on tiny-imagenet, got {name!r}.')
    block, num_blocks = PREACT_RESNET_CONFIGS[name]
    return TIPreActResNet(block, num_blocks, num_classes=num_classes)

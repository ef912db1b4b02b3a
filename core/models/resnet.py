"""ResNet (He et al., 2016) for 32x32 inputs, and the input `Normalization` layer.

Post-activation ResNet as in the reference (kuangliu's CIFAR layout): relu(bn1(conv1(x))), four stages of
64/128/256/512 planes with strides 1/2/2/2, avg_pool 4, linear. All convs are bias-free; BatchNorm uses the
PyTorch defaults (momentum 0.1, eps 1e-5; the weight-averaging trick sets 0.01 on every BN all the same,
docs/differences.md item 20); initialisation is PyTorch's default.

State-dict keys (without the `module.P.` prefix): `conv1.weight`, `bn1.*`, `layerL.i.{conv1,bn1,conv2,bn2[,conv3,bn3]}`,
`layerL.0.shortcut.0.weight` (1x1 conv), `layerL.0.shortcut.1.*` (its BN), `linear.{weight,bias}`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Normalization(nn.Module):
    """(x - mean) / std per channel, the layer `--normalize` puts in front of the backbone.

    mean, std: sequences of C floats. The constants are non-persistent buffers: they follow `.to()` but have no
    state-dict entries, as in the reference (where they were plain attributes).
    Input (N, C, H, W) images in [0, 1]; output the same shape.
    """

    def __init__(self, mean, std):
        super().__init__()
        num_channels = len(mean)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, num_channels, 1, 1),
                             persistent=False)
        self.register_buffer('sigma', torch.tensor(std, dtype=torch.float32).view(1, num_channels, 1, 1),
                             persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.sigma


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the identity or a 1x1 conv + BN shortcut, then ReLU."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 (x4 planes) with BN after each conv, ReLU between, shortcut as BasicBlock."""
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """ResNet for 32x32 inputs.

    Arguments: block (BasicBlock or Bottleneck), num_blocks (4 ints), num_classes (default 10).
    Input (N, 3, 32, 32) in the model's input space; output logits (N, num_classes).
    """

    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.avg_pool2d(out, 4)
        out = out.reshape(out.size(0), -1)
        return self.linear(out)


RESNET_CONFIGS = {
    'resnet18': (BasicBlock, (2, 2, 2, 2)),
    'resnet34': (BasicBlock, (3, 4, 6, 3)),
    'resnet50': (Bottleneck, (3, 4, 6, 3)),
    'resnet101': (Bottleneck, (3, 4, 23, 3)),
}


def resnet(name, num_classes=10):
    """Build `resnet18`, `resnet34`, `resnet50` or `resnet101` with `num_classes` outputs."""
    if name not in RESNET_CONFIGS:
        raise ValueError(f'Only {", ".join(RESNET_CONFIGS)} are supported, got {name!r}.')
    block, num_blocks = RESNET_CONFIGS[name]
    return ResNet(block, num_blocks, num_classes=num_classes)

"""Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks", 2016) for 32x32 inputs.

As the reference: conv1 3x3 3->64; layer1..4 of 64/128/256/512 planes with strides 1/2/2/2; head relu(bn(out)),
avg_pool 4, linear. Basic block: o = relu(bn1(x)); shortcut = 1x1 conv(stride) on o when the shape changes, else
the raw x; conv1 3x3 (stride), relu(bn2), conv2 3x3; add. Bottleneck: 1x1, 3x3(stride), 1x1 (x4) with bn1..bn3.
Bias-free convs, BatchNorm defaults (momentum 0.1, eps 1e-5; the weight-averaging trick sets 0.01 on every BN
all the same, docs/differences.md item 20), PyTorch default initialisation.
`act` (optional) is a zero-argument factory of the activation module used instead of ReLU (the without_DDPM
models, core/models/without_ddpm.py); activations have no state, so the keys do not change.

State-dict keys (without the `module.P.` prefix): `conv1.weight`, `layerL.i.{bn1,conv1,bn2,conv2[,bn3,conv3]}`,
`layerL.0.shortcut.0.weight`, `bn.*`, `linear.{weight,bias}`.
"""
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    """Pre-activation basic block (two 3x3 convs)."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, act=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))
        self.act = F.relu if act is None else act()

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, 'shortcut') else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block (1x1, 3x3, 1x1 with 4x expansion)."""
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, act=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))
        self.act = F.relu if act is None else act()

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, 'shortcut') else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet.

    Arguments: block (PreActBlock or PreActBottleneck), num_blocks (4 ints), num_classes (default 10),
    act (default None = ReLU): zero-argument factory of the activation module.
    Input (N, 3, 32, 32); output logits (N, num_classes).
    """

    def __init__(self, block, num_blocks, num_classes=10, act=None):
        super().__init__()
        self.in_planes = 64
        self.act_factory = act
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512 * block.expansion)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self.act = F.relu if act is None else act()

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s, act=self.act_factory))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def features(self, x):
        out = self.conv1(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        return self.act(self.bn(out))

    def forward(self, x):
        out = F.avg_pool2d(self.features(x), 4)
        out = out.reshape(out.size(0), -1)
        return self.linear(out)


PREACT_RESNET_CONFIGS = {
    'preact-resnet18': (PreActBlock, (2, 2, 2, 2)),
    'preact-resnet34': (PreActBlock, (3, 4, 6, 3)),
    'preact-resnet50': (PreActBottleneck, (3, 4, 6, 3)),
    'preact-resnet101': (PreActBottleneck, (3, 4, 23, 3)),
}


def preact_resnet(name, num_classes=10, act=None):
    """Build `preact-resnet18/34/50/101` with `num_classes` outputs (and the activation factory `act`)."""
    if name not in PREACT_RESNET_CONFIGS:
        raise ValueError(f'Only {", ".join(PREACT_RESNET_CONFIGS)} are supported, got {name!r}.')
    block, num_blocks = PREACT_RESNET_CONFIGS[name]
    return PreActResNet(block, num_blocks, num_classes=num_classes, act=act)

"""Pre-activation ResNet (He et al., 2016) as the reference's (docs/differences.md item 20); `act` replaces ReLU."""
import torch.nn as nn
import torch.nn.functional as F


def _shortcut(in_planes, out_planes, stride):
    if stride != 1 or in_planes != out_planes:
        return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False))
    return None


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, act=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.act = F.relu if act is None else act()

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, act=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.shortcut = _shortcut(in_planes, self.expansion * planes, stride)
        self.act = F.relu if act is None else act()

    def forward(self, x):
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """`global_pool`: AdaptiveAvgPool2d(1) instead of avg_pool2d(4) (Tiny-ImageNet, 64x64 inputs)."""

    def __init__(self, block, num_blocks, num_classes=10, act=None, global_pool=False):
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
        self.avgpool = nn.AdaptiveAvgPool2d(1) if global_pool else None

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s, act=self.act_factory))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = self.act(self.bn(out))
        out = F.avg_pool2d(out, 4) if self.avgpool is None else self.avgpool(out)
        return self.linear(out.reshape(out.size(0), -1))


PREACT_RESNET_CONFIGS = {
    'preact-resnet18': (PreActBlock, (2, 2, 2, 2)),
    'preact-resnet34': (PreActBlock, (3, 4, 6, 3)),
    'preact-resnet50': (PreActBottleneck, (3, 4, 6, 3)),
    'preact-resnet101': (PreActBottleneck, (3, 4, 23, 3)),
}


def preact_resnet(name, num_classes=10, act=None, global_pool=False):
    block, num_blocks = PREACT_RESNET_CONFIGS[name]
    return PreActResNet(block, num_blocks, num_classes=num_classes, act=act, global_pool=global_pool)

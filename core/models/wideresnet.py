"""Wide ResNet with ReLU, `wrn-D-W`, as the reference's (docs/differences.md item 20); `act` replaces ReLU."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, act):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = act()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = act()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, kernel_size=1,
                                                                     stride=stride, padding=0, bias=False)

    def forward(self, x):
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equal_in_out else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride, act):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act)
            for i in range(nb_layers)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=34, num_classes=10, widen_factor=10, act=None):
        super().__init__()
        act = act or (lambda: nn.ReLU(inplace=True))
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1, got {depth}.')
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, n_channels[0], n_channels[1], 1, act)
        self.block2 = NetworkBlock(n, n_channels[1], n_channels[2], 2, act)
        self.block3 = NetworkBlock(n, n_channels[2], n_channels[3], 2, act)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = act()
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.n_channels = n_channels[3]
        init_wide_resnet_(self)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.reshape(-1, self.n_channels))


@torch.no_grad()
def init_wide_resnet_(model):
    """Conv ~ N(0, sqrt(2 / (k_h k_w out))), BN weight 1 bias 0, Linear bias 0 (its weight keeps PyTorch's)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.zero_()

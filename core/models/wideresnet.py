"""Wide residual network with ReLU (Zagoruyko & Komodakis, 2016), the `wrn-D-W` models.

conv1 3x3 3->16; block1..3, each a `layer` Sequential of (D-4)/6 BasicBlocks with 16W/32W/64W channels and
strides 1/2/2; head relu(bn1), avg_pool 8, fc. BasicBlock: bn1, relu, conv1 3x3 (stride, padding 1), bn2, relu,
conv2 3x3; when in != out the input is pre-activated and both the conv path and `convShortcut` (1x1, stride)
use it, otherwise the residual is the raw input. Dropout 0. BatchNorm defaults (momentum 0.1, eps 1e-5; the
weight-averaging trick sets 0.01 on every BN all the same, docs/differences.md item 20).
`act` (optional, default ReLU in place) is a zero-argument factory of the activation modules `relu1`, `relu2`,
`relu` (the without_DDPM WRN, core/models/without_ddpm.py); they have no state.
Initialisation as WRN-Swish: conv ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 bias 0, linear bias 0.

State-dict keys (without the `module.P.` prefix): `conv1.weight`, `blockG.layer.i.{bn1,conv1,bn2,conv2}`,
`blockG.layer.0.convShortcut.weight`, `bn1.*`, `fc.{weight,bias}`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _relu():
    return nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    """Pre-activation wide basic block."""

    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0, act=None):
        super().__init__()
        act = act or _relu
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = act()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = act()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.equal_in_out else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    """A group of `nb_layers` blocks; the first gets (in_planes, out_planes, stride), the rest (out, out, 1)."""

    def __init__(self, nb_layers, in_planes, out_planes, block, stride, drop_rate=0.0, act=None):
        super().__init__()
        self.layer = nn.Sequential(*[
            block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate, act=act)
            for i in range(nb_layers)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor with ReLU.

    Arguments: depth (default 34; (depth - 4) % 6 == 0), num_classes (default 10), widen_factor (default 10),
    drop_rate (default 0), act (default None = ReLU in place). Input (N, 3, 32, 32); output logits (N, num_classes).
    """

    def __init__(self, depth=34, num_classes=10, widen_factor=10, drop_rate=0.0, act=None):
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1, got {depth}.')
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, n_channels[0], n_channels[1], BasicBlock, 1, drop_rate, act)
        self.block2 = NetworkBlock(n, n_channels[1], n_channels[2], BasicBlock, 2, drop_rate, act)
        self.block3 = NetworkBlock(n, n_channels[2], n_channels[3], BasicBlock, 2, drop_rate, act)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = (act or _relu)()
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.n_channels = n_channels[3]
        init_wide_resnet_(self)

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.reshape(-1, self.n_channels)
        return self.fc(out)


@torch.no_grad()
def init_wide_resnet_(model):
    """The WRN initialisation, over `model.modules()` in order.

    Conv2d weight ~ N(0, sqrt(2 / (k_h * k_w * out_channels))); BatchNorm2d weight 1, bias 0; Linear bias 0
    (the Linear weight keeps PyTorch's default).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.zero_()


def wideresnet(name, num_classes=10):
    """Build `wrn-D-W` (e.g. `wrn-34-10`) with `num_classes` outputs."""
    parts = name.split('-')
    depth, widen = int(parts[1]), int(parts[2])
    return WideResNet(depth=depth, num_classes=num_classes, widen_factor=widen)

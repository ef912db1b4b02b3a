"""WideResNet with Swish (Gowal et al., 2020), `wrn-D-W-swish`, as the reference's (docs/differences.md item 18)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .wideresnet import init_wide_resnet_

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def dataset_mean_std(dataset):
    """The Swish models' constants by substring: cifar100*, *svhn*, else CIFAR-10 (docs/differences.md item 13)."""
    if 'cifar100' in dataset:
        return CIFAR100_MEAN, CIFAR100_STD
    if 'svhn' in dataset:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return CIFAR10_MEAN, CIFAR10_STD


def pad_same(x, stride):
    """TF "SAME" padding of a 3x3 conv: stride 1 pads 1 on every side, stride 2 only 1 right/bottom."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    if stride == 2:
        return F.pad(x, (0, 1, 0, 1))
    raise ValueError(f'Unsupported stride {stride}: only 1 and 2 are implemented.')


class InputNormalized(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x):
        return (x - self.mean) / self.std


class _Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn(inplace=True)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation_fn(inplace=True)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0,
                                  bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x):
        a = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(pad_same(a, self._stride))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        residual = self.shortcut(a) if self.has_shortcut else x
        return residual + out


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.block = nn.Sequential(*[
            _Block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation_fn)
            for i in range(num_blocks)])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(InputNormalized):
    def __init__(self, num_classes=10, depth=28, width=10, activation_fn=nn.ReLU, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD):
        super().__init__(mean, std)
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, num_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(*[_BlockGroup(num_blocks, num_channels[i], num_channels[i + 1], 2 if i else 1,
                                                 activation_fn=activation_fn) for i in range(3)])
        self.batchnorm = nn.BatchNorm2d(num_channels[3], momentum=0.01)
        self.relu = activation_fn(inplace=True)
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]
        init_wide_resnet_(self)

    def forward(self, x):
        out = self.layer(self.init_conv(self.normalize(x)))
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        return self.logits(out.reshape(-1, self.num_channels))


def wideresnetwithswish(depth, width, dataset='cifar10', num_classes=10):
    mean, std = dataset_mean_std(dataset)
    return DMWideResNet(num_classes=num_classes, depth=depth, width=width, activation_fn=nn.SiLU, mean=mean, std=std)

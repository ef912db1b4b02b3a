"""Pre-activation ResNet with Swish (Rebuffi et al., 2021) as the reference's (docs/differences.md item 13)."""
import torch.nn as nn
import torch.nn.functional as F

from .wideresnetwithswish import InputNormalized, dataset_mean_std, pad_same


class _PreActBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self._stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn(inplace=True)
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation_fn(inplace=True)
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)

    def forward(self, x):
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = self.shortcut(pad_same(x, self._stride)) if self.has_shortcut else x
        out = self.conv_2d_1(pad_same(out, self._stride))
        out = self.conv_2d_2(self.relu_1(self.batchnorm_1(out)))
        return out + shortcut


class PreActResNet(InputNormalized):
    def __init__(self, num_blocks, num_classes, activation_fn, mean, std):
        super().__init__(mean, std)
        self.conv_2d = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer_0 = self._make_layer(64, 64, num_blocks[0], 1, activation_fn)
        self.layer_1 = self._make_layer(64, 128, num_blocks[1], 2, activation_fn)
        self.layer_2 = self._make_layer(128, 256, num_blocks[2], 2, activation_fn)
        self.layer_3 = self._make_layer(256, 512, num_blocks[3], 2, activation_fn)
        self.batchnorm = nn.BatchNorm2d(512, momentum=0.01)
        self.relu = activation_fn(inplace=True)
        self.logits = nn.Linear(512, num_classes)

    def _make_layer(self, in_planes, out_planes, num_blocks, stride, activation_fn):
        return nn.Sequential(*[
            _PreActBlock(in_planes if i == 0 else out_planes, out_planes, s, activation_fn)
            for i, s in enumerate([stride] + [1] * (num_blocks - 1))])

    def forward(self, x):
        out = self.conv_2d(self.normalize(x))
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(out))))
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 4)
        return self.logits(out.reshape(out.size(0), -1))


SWISH_PREACT_CONFIGS = {'preact-resnet18-swish': (2, 2, 2, 2), 'preact-resnet34-swish': (3, 4, 6, 3)}


def preact_resnetwithswish(name, dataset='cifar10', num_classes=10):
    mean, std = dataset_mean_std(dataset)
    return PreActResNet(SWISH_PREACT_CONFIGS[name], num_classes, nn.SiLU, mean, std)

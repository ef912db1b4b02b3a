"""WideResNet with Swish/SiLU, after Gowal et al. (2020) / Rebuffi et al. (2021): the `wrn-D-W-swish` models.

As the reference, the model normalises its input itself with per-dataset constants (non-persistent buffers, never in the
state dict), pads manually to reproduce TensorFlow's "SAME" padding for strided convs, applies the shortcut to the
pre-activated input, and uses BatchNorm momentum 0.01 (PyTorch convention; 0.99 in TF terms).

State-dict keys (without the `module.P.` prefix), g in 0..2, b in 0..n-1 with n = (D - 4) / 6:
`init_conv.weight`; `layer.g.block.b.{batchnorm_0.*, conv_0.weight, batchnorm_1.*, conv_1.weight}`;
`layer.g.block.0.shortcut.weight` when in != out; `batchnorm.*`; `logits.{weight,bias}`. The substring
`batchnorm` of these names is what exempts the BN parameters from weight decay (docs/differences.md item 18).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .wideresnet import init_wide_resnet_

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
SVHN_MEAN = (0.5, 0.5, 0.5)
SVHN_STD = (0.5, 0.5, 0.5)

_ACTIVATION = {
    'relu': nn.ReLU,
    'swish': nn.SiLU,
}


def dataset_mean_std(dataset):
    """The internal normalisation constants of the Swish models, chosen by substring of the dataset name.

    `cifar100*` -> CIFAR-100 constants; `*svhn*` -> 0.5; anything else (cifar10, cifar10s) -> CIFAR-10 constants
    (std 0.2471..., not the 0.2023... of `get_data_info`, kept on purpose: docs/differences.md item 13).
    """
    if 'cifar100' in dataset:
        return CIFAR100_MEAN, CIFAR100_STD
    if 'svhn' in dataset:
        return SVHN_MEAN, SVHN_STD
    return CIFAR10_MEAN, CIFAR10_STD


def pad_same(x, stride):
    """TF "SAME" padding for a 3x3 conv with padding 0: stride 1 pads 1 on every side, stride 2 pads 0 left/top and
    1 right/bottom. Any other stride is an error. Works on contiguous and channels_last tensors."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    if stride == 2:
        return F.pad(x, (0, 1, 0, 1))
    raise ValueError(f'Unsupported stride {stride}: only 1 and 2 are implemented.')


class _Block(nn.Module):
    """WRN block: a = act(batchnorm_0(x)); main = conv_1(act(batchnorm_1(conv_0(pad(a))))); residual = shortcut(a)
    (1x1 conv, stride) when in != out, else the raw x; output residual + main."""

    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn(inplace=True)
        # Padding 0 here: `forward` pads manually to obtain TF's "SAME" (it matters when the stride is 2).
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation_fn(inplace=True)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        else:
            self.shortcut = None
        self._stride = stride

    def forward(self, x):
        a = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(pad_same(a, self._stride))
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        residual = self.shortcut(a) if self.has_shortcut else x
        return residual + out


class _BlockGroup(nn.Module):
    """`num_blocks` blocks; block 0 gets (in_planes, out_planes, stride), the others (out_planes, out_planes, 1)."""

    def __init__(self, num_blocks, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.block = nn.Sequential(*[
            _Block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                   activation_fn=activation_fn)
            for i in range(num_blocks)])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    """WideResNet of Gowal et al. with internal input normalisation.

    Arguments: num_classes (default 10), depth (default 28; (depth - 4) % 6 == 0), width (default 10),
    activation_fn (an nn.Module class taking `inplace`, default nn.ReLU), mean / std (3 floats each, default
    CIFAR-10), padding (zero padding of the input, default 0), num_input_channels (default 3).
    Input (N, 3, 32, 32) images in [0, 1]; output logits (N, num_classes).
    """

    def __init__(self, num_classes=10, depth=28, width=10, activation_fn=nn.ReLU, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, padding=0, num_input_channels=3):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, num_input_channels, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, num_input_channels, 1, 1),
                             persistent=False)
        self.padding = padding
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1, got {depth}.')
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(num_input_channels, num_channels[0], kernel_size=3, stride=1, padding=1,
                                   bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(num_blocks, num_channels[0], num_channels[1], 1, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[1], num_channels[2], 2, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[2], num_channels[3], 2, activation_fn=activation_fn))
        self.batchnorm = nn.BatchNorm2d(num_channels[3], momentum=0.01)
        self.relu = activation_fn(inplace=True)
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]
        init_wide_resnet_(self)

    def forward(self, x):
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean) / self.std
        out = self.init_conv(out)
        out = self.layer(out)
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        out = out.reshape(-1, self.num_channels)
        return self.logits(out)


def wideresnetwithswish(name, dataset='cifar10', num_classes=10):
    """Build `wrn-D-W-swish` (or `wrn-D-W-relu`) for `dataset` (selects the internal mean/std) with `num_classes`."""
    mean, std = dataset_mean_std(dataset)
    parts = name.split('-')
    depth, width, act = int(parts[1]), int(parts[2]), parts[3]
    if act not in _ACTIVATION:
        raise ValueError(f'Unknown activation {act!r} in {name!r}: use one of {", ".join(_ACTIVATION)}.')
    return DMWideResNet(num_classes=num_classes, depth=depth, width=width, activation_fn=_ACTIVATION[act],
                        mean=mean, std=std)

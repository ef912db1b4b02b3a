"""Pre-activation ResNet with Swish/SiLU, after Rebuffi et al. (2021): `preact-resnet18-swish`, `-34-swish`.

As the reference: conv_2d 3x3 3->64; layer_0..3 of 64/128/256/512 planes with strides 1/2/2/2; head act(batchnorm),
avg_pool 4, logits. Block: o = act(batchnorm_0(x)); main = conv_2d_2(act(batchnorm_1(conv_2d_1(pad(o))))) with the
same TF "SAME" manual padding as WRN-Swish; shortcut (iff stride != 1 or in != out) = a 3x3 conv, stride s,
padding 0, on pad(raw x); output main + shortcut. BatchNorm momentum 0.01, PyTorch default initialisation, internal
per-dataset mean/std as non-persistent buffers (docs/differences.md item 13).

State-dict keys (without the `module.P.` prefix): `conv_2d.weight`,
`layer_L.i.{batchnorm_0.*, conv_2d_1.weight, batchnorm_1.*, conv_2d_2.weight}`, `layer_L.0.shortcut.weight`,
`batchnorm.*`, `logits.{weight,bias}`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .wideresnetwithswish import _ACTIVATION, CIFAR10_MEAN, CIFAR10_STD, dataset_mean_std, pad_same


class _PreActBlock(nn.Module):
    """Pre-activation block with manual "SAME" padding and a 3x3 conv shortcut on the raw (padded) input."""

    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self._stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn(inplace=True)
        # Padding 0 here: `forward` pads manually to obtain TF's "SAME" (it matters when the stride is 2).
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


class PreActResNet(nn.Module):
    """PreAct ResNet-18/34 with internal input normalisation.

    Arguments: num_classes (default 10), depth (18 or 34, default 18), width (must be 0), activation_fn (default
    nn.ReLU), mean / std (3 floats each, default CIFAR-10), padding (default 0), num_input_channels (default 3).
    Input (N, 3, 32, 32) images in [0, 1]; output logits (N, num_classes).
    """

    def __init__(self, num_classes=10, depth=18, width=0, activation_fn=nn.ReLU, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, padding=0, num_input_channels=3):
        super().__init__()
        if width != 0:
            raise ValueError('Unsupported `width`.')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, num_input_channels, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, num_input_channels, 1, 1),
                             persistent=False)
        self.padding = padding
        self.conv_2d = nn.Conv2d(num_input_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if depth == 18:
            num_blocks = (2, 2, 2, 2)
        elif depth == 34:
            num_blocks = (3, 4, 6, 3)
        else:
            raise ValueError(f'Unsupported depth {depth}: only 18 and 34.')
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
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean) / self.std
        out = self.conv_2d(out)
        out = self.layer_0(out)
        out = self.layer_1(out)
        out = self.layer_2(out)
        out = self.layer_3(out)
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 4)
        out = out.reshape(out.size(0), -1)
        return self.logits(out)


def preact_resnetwithswish(name, dataset='cifar10', num_classes=10):
    """Build `preact-resnet18-swish` or `preact-resnet34-swish` for `dataset` with `num_classes` outputs.

    The depth is the last two digits of the name without its activation suffix.
    """
    mean, std = dataset_mean_std(dataset)
    parts = name.split('-')
    act = parts[-1]
    if act not in _ACTIVATION:
        raise ValueError(f'Unknown activation {act!r} in {name!r}: use one of {", ".join(_ACTIVATION)}.')
    depth = int('-'.join(parts[:-1])[-2:])
    return PreActResNet(num_classes=num_classes, depth=depth, width=0, activation_fn=_ACTIVATION[act],
                        mean=mean, std=std)

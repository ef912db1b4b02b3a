"""`create_model`: nn.Sequential([Normalization] + [backbone]) keyed as DataParallel's (docs/differences.md item 36)."""
import argparse
import re

import torch.nn as nn

from core.utils.errors import UserError

from .preact_resnet import PREACT_RESNET_CONFIGS, preact_resnet
from .preact_resnetwithswish import SWISH_PREACT_CONFIGS, preact_resnetwithswish
from .resnet import RESNET_CONFIGS, Normalization, resnet
from .wideresnet import WideResNet
from .wideresnetwithswish import wideresnetwithswish

__all__ = ['MODELS', 'ModelWrapper', 'Normalization', 'check_model_name', 'create_model']

# The reference's list, in its order. `wrn-32-10` is listed but cannot be built ((32 - 4) % 6 != 0).
MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101',
          'preact-resnet18', 'preact-resnet34', 'preact-resnet50', 'preact-resnet101',
          'wrn-28-10', 'wrn-32-10', 'wrn-34-10', 'wrn-34-20',
          'preact-resnet18-swish', 'preact-resnet34-swish',
          'wrn-28-10-swish', 'wrn-34-20-swish', 'wrn-70-16-swish')

_WRN_RE = re.compile(r'^wrn-(\d+)-(\d+)(-swish)?$')


def _name_error(name):
    """The reason `name` cannot be built (one line, with the fix), or None if it can."""
    if name in RESNET_CONFIGS or name in PREACT_RESNET_CONFIGS or name in SWISH_PREACT_CONFIGS:
        return None
    m = _WRN_RE.match(name) if isinstance(name, str) else None
    if m is None:
        return (f'unknown model {name!r}: use one of {", ".join(m for m in MODELS if m != "wrn-32-10")}, '
                f'or wrn-D-W / wrn-D-W-swish with (D - 4) % 6 == 0')
    depth, width, suffix = int(m.group(1)), int(m.group(2)), m.group(3) or ''
    if depth < 10:
        return (f'model {name!r} cannot be built: a WideResNet needs depth = 6n + 4 with n >= 1 block per group, '
                f'so at least 10; use e.g. wrn-10-{width}{suffix}')
    if (depth - 4) % 6 != 0:
        lower = depth - (depth - 4) % 6
        best = lower + 6 if (lower + 6 - depth) <= (depth - lower) else lower  # the nearest valid depth
        listed = ' (it is listed by the reference but fails its depth assertion)' if name in MODELS else ''
        return (f'model {name!r} cannot be built{listed}: a WideResNet needs depth = 6n + 4, but '
                f'({depth} - 4) % 6 = {(depth - 4) % 6}; use e.g. wrn-{best}-{width}{suffix}')
    if width < 1:
        return f'model {name!r} cannot be built: the width must be >= 1; use e.g. wrn-{depth}-10'
    return None


def check_model_name(name):
    """argparse `type=` of `--model`."""
    error = _name_error(name)
    if error is not None:
        raise argparse.ArgumentTypeError(error)
    return name


class ModelWrapper(nn.Module):
    def __init__(self, module, name=None, num_classes=None, normalize=False):
        super().__init__()
        self.module, self.name, self.num_classes, self.normalize = module, name, num_classes, normalize

    def forward(self, x):
        return self.module(x)

    def extra_repr(self):
        return f'name={self.name!r}, num_classes={self.num_classes}, normalize={self.normalize}'


def _backbone(name, data, num_classes):
    if data == 'tiny-imagenet':
        if name not in PREACT_RESNET_CONFIGS:
            raise UserError(f'model {name!r} is not available for tiny-imagenet: use one of '
                            f'{", ".join(PREACT_RESNET_CONFIGS)}')
        return preact_resnet(name, num_classes=num_classes, global_pool=True)
    if name in PREACT_RESNET_CONFIGS:
        return preact_resnet(name, num_classes=num_classes)
    if name in SWISH_PREACT_CONFIGS:
        return preact_resnetwithswish(name, dataset=data, num_classes=num_classes)
    if name in RESNET_CONFIGS:
        return resnet(name, num_classes=num_classes)
    depth, width, swish = _WRN_RE.match(name).groups()
    if swish:
        return wideresnetwithswish(int(depth), int(width), dataset=data, num_classes=num_classes)
    return WideResNet(depth=int(depth), num_classes=num_classes, widen_factor=int(width))


def create_model(name, normalize, info, device):
    error = _name_error(name)
    if error is not None:
        raise UserError(error)
    backbone = _backbone(name, info['data'], info['num_classes'])
    layers = [Normalization(info['mean'], info['std'])] if normalize else []
    model = ModelWrapper(nn.Sequential(*layers, backbone), name=name, num_classes=info['num_classes'],
                         normalize=bool(normalize))
    return model.to(device)

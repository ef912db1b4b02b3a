"""Model zoo: `MODELS`, `create_model` and model-name validation.

`create_model` returns a `ModelWrapper` whose only child is `module`, an `nn.Sequential` of
`[Normalization(info mean/std)] + [backbone]`. Its state-dict keys are therefore `module.0.*` without `--normalize`
and `module.1.*` with it: exactly the keys of the reference's DataParallel checkpoints
(docs/differences.md item 36), without wrapping in DataParallel.
"""
import argparse
import re

import torch.nn as nn

from core.utils.errors import UserError

from .preact_resnet import PREACT_RESNET_CONFIGS, preact_resnet
from .preact_resnetwithswish import preact_resnetwithswish
from .resnet import RESNET_CONFIGS, Normalization, resnet
from .ti_preact_resnet import ti_preact_resnet
from .wideresnet import wideresnet
from .wideresnetwithswish import wideresnetwithswish

__all__ = ['MODELS', 'ModelWrapper', 'Normalization', 'check_model_name', 'create_backbone', 'create_model',
           'parse_wrn_name']

# The reference's list, in its order. `wrn-32-10` is listed but cannot be built ((32 - 4) % 6 != 0).
MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101',
          'preact-resnet18', 'preact-resnet34', 'preact-resnet50', 'preact-resnet101',
          'wrn-28-10', 'wrn-32-10', 'wrn-34-10', 'wrn-34-20',
          'preact-resnet18-swish', 'preact-resnet34-swish',
          'wrn-28-10-swish', 'wrn-34-20-swish', 'wrn-70-16-swish')

_SWISH_PREACT = ('preact-resnet18-swish', 'preact-resnet34-swish')
_WRN_RE = re.compile(r'^wrn-(\d+)-(\d+)(-swish)?$')


def parse_wrn_name(name):
    """`wrn-D-W[-swish]` -> (depth, width, swish: bool); None if `name` does not have that form."""
    m = _WRN_RE.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), m.group(3) is not None


def _name_error(name):
    """The reason `name` cannot be built (one line, with the fix), or None if it can."""
    if name in RESNET_CONFIGS or name in PREACT_RESNET_CONFIGS or name in _SWISH_PREACT:
        return None
    wrn = parse_wrn_name(name) if isinstance(name, str) else None
    if wrn is None:
        return (f'unknown model {name!r}: use one of {", ".join(m for m in MODELS if m != "wrn-32-10")}, '
                f'or wrn-D-W / wrn-D-W-swish with (D - 4) % 6 == 0')
    depth, width, swish = wrn
    suffix = '-swish' if swish else ''
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
    """argparse `type=` for `--model`: return `name` if it can be built, else raise argparse.ArgumentTypeError."""
    error = _name_error(name)
    if error is not None:
        raise argparse.ArgumentTypeError(error)
    return name


class ModelWrapper(nn.Module):
    """Holds `module` = nn.Sequential([Normalization] + [backbone]) so that parameter and state-dict names carry the
    reference's `module.0.` / `module.1.` prefix.

    Attributes (not modules): `name` (the architecture name), `num_classes`, `normalize`.
    Input (N, 3, H, W) images in [0, 1]; output logits (N, num_classes).
    """

    def __init__(self, module, name=None, num_classes=None, normalize=False):
        super().__init__()
        self.module = module
        self.name = name
        self.num_classes = num_classes
        self.normalize = normalize

    def forward(self, x):
        return self.module(x)

    def extra_repr(self):
        return f'name={self.name!r}, num_classes={self.num_classes}, normalize={self.normalize}'


def create_backbone(name, info):
    """The bare network for `name` and `info` (keys `data`, `num_classes`), dispatched as the reference."""
    error = _name_error(name)
    if error is not None:
        raise UserError(error)
    data, num_classes = info['data'], info['num_classes']
    if data == 'tiny-imagenet':
        if name not in PREACT_RESNET_CONFIGS:
            raise UserError(f'model {name!r} is not available for tiny-imagenet: use one of '
                            f'{", ".join(PREACT_RESNET_CONFIGS)}')
        return ti_preact_resnet(name, num_classes=num_classes)
    if 'preact-resnet' in name and 'swish' not in name:
        return preact_resnet(name, num_classes=num_classes)
    if 'preact-resnet' in name and 'swish' in name:
        return preact_resnetwithswish(name, dataset=data, num_classes=num_classes)
    if 'resnet' in name and 'preact' not in name:
        return resnet(name, num_classes=num_classes)
    if 'wrn' in name and 'swish' not in name:
        return wideresnet(name, num_classes=num_classes)
    if 'wrn' in name and 'swish' in name:
        return wideresnetwithswish(name, dataset=data, num_classes=num_classes)
    raise UserError(f'invalid model name {name!r}')  # unreachable: _name_error accepts only the names above


def create_model(name, normalize, info, device):
    """Build model `name` for the dataset described by `info` and move it to `device`.

    Arguments:
        name: a MODELS entry (not wrn-32-10) or wrn-D-W[-swish] with (D - 4) % 6 == 0.
        normalize: bool, put Normalization(info['mean'], info['std']) in front (state-dict prefix `module.1.`).
        info: dict with keys `data` (e.g. 'cifar10s'), `num_classes`, and `mean`, `std` (read only if normalize).
        device: a torch.device or string.
    Returns a ModelWrapper; model(x) maps (N, 3, H, W) images in [0, 1] to logits (N, num_classes).
    Raises UserError for a name that cannot be built.
    """
    backbone = create_backbone(name, info)
    layers = [Normalization(info['mean'], info['std'])] if normalize else []
    model = ModelWrapper(nn.Sequential(*layers, backbone), name=name, num_classes=info['num_classes'],
                         normalize=bool(normalize))
    return model.to(device)

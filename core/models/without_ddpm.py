"""The without_DDPM models: core backbones with a chosen activation, keyed as the original's DataParallel's."""
import torch
import torch.nn as nn

from core.utils.errors import UserError

from .preact_resnet import preact_resnet
from .wideresnet import WideResNet
from .wideresnetwithswish import CIFAR10_MEAN, CIFAR10_STD

MODELS = ('PreActResNet18', 'WideResNet')
# --activation -> zero-argument module factory (the PreActResNet18 list; the WRN takes the first three).
ACTIVATIONS = {
    'ReLU': lambda: nn.ReLU(inplace=True),
    'Swish': lambda: nn.SiLU(inplace=True),
    'Softplus': lambda: nn.Softplus(beta=10, threshold=20),
    'GELU': lambda: nn.GELU(),
    'ELU': lambda: nn.ELU(alpha=1.0, inplace=True),
    'LeakyReLU': lambda: nn.LeakyReLU(negative_slope=0.1, inplace=True),
    'SELU': lambda: nn.SELU(inplace=True),
    'CELU': lambda: nn.CELU(alpha=1.2, inplace=True),
    'Tanh': lambda: nn.Tanh(),
}
WRN_ACTIVATIONS = ('ReLU', 'Swish', 'Softplus')


class NormalizedNet(nn.Module):
    """module((x - mean) / std): CIFAR-10's constants, CIFAR-100 too, as the original (docs/differences.md item 62)."""

    def __init__(self, module, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.module = module
        self.register_buffer('mean', torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, x):
        return self.module((x - self.mean) / self.std)


def create_without_ddpm_model(name, num_classes, activation='ReLU', width_factor=10, device='cpu', depth=34):
    if name not in MODELS:
        raise UserError(f'unknown --model {name!r}; use one of {", ".join(MODELS)}.')
    allowed = tuple(ACTIVATIONS) if name == 'PreActResNet18' else WRN_ACTIVATIONS
    if activation not in allowed:
        raise UserError(f'--activation {activation!r} is not available for {name}; use one of {", ".join(allowed)}.')
    if width_factor < 1:
        raise UserError(f'--width-factor {width_factor}: must be >= 1.')
    act = ACTIVATIONS[activation]
    if name == 'PreActResNet18':
        net = preact_resnet('preact-resnet18', num_classes=num_classes, act=act)
    else:
        net = WideResNet(depth=depth, num_classes=num_classes, widen_factor=width_factor, act=act)
    return NormalizedNet(net).to(device)

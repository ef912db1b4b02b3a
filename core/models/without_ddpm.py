"""The two models of the without_DDPM scripts: PreActResNet18 and WideResNet-34-w, with a chosen activation.

They are the core `preact-resnet18` and `wrn-34-w` backbones (same construction order, so the same weights for
a seed) with the activation replaced, inside `NormalizedNet`, whose only child is `module`: the state-dict keys
are those of the original's `DataParallel(model)`, e.g. `module.conv1.weight`, `module.layer2.0.shortcut.0.weight`,
`module.linear.bias` (PreActResNet18, 107 entries) or `module.block1.layer.0.convShortcut.weight`,
`module.fc.weight` (WRN-34-w, 191 entries), so checkpoints of the original load strictly and ours load there.

The original normalised every input with the CIFAR-10 mean/std (also for CIFAR-100; kept, docs/differences.md item
62) in the training script; here that is part of the model (non-persistent buffers: not in the state dict, they
follow `.to(device)`).
"""
import torch
import torch.nn as nn

from core.utils.errors import UserError

from .preact_resnet import preact_resnet
from .wideresnet import WideResNet

__all__ = ['ACTIVATIONS', 'CIFAR10_MEAN', 'CIFAR10_STD', 'MODELS', 'NormalizedNet', 'WRN_ACTIVATIONS',
           'create_without_ddpm_model']

MODELS = ('PreActResNet18', 'WideResNet')
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
SOFTPLUS_BETA = 10

# --activation -> zero-argument module factory (the PreActResNet18 list; the WRN takes the first three).
ACTIVATIONS = {
    'ReLU': lambda: nn.ReLU(inplace=True),
    'Swish': lambda: nn.SiLU(inplace=True),
    'Softplus': lambda: nn.Softplus(beta=SOFTPLUS_BETA, threshold=20),
    'GELU': lambda: nn.GELU(),
    'ELU': lambda: nn.ELU(alpha=1.0, inplace=True),
    'LeakyReLU': lambda: nn.LeakyReLU(negative_slope=0.1, inplace=True),
    'SELU': lambda: nn.SELU(inplace=True),
    'CELU': lambda: nn.CELU(alpha=1.2, inplace=True),
    'Tanh': lambda: nn.Tanh(),
}
WRN_ACTIVATIONS = ('ReLU', 'Swish', 'Softplus')


class NormalizedNet(nn.Module):
    """x in [0, 1] (N, 3, H, W) -> module((x - mean) / std), the logits (N, K).

    `module` is the backbone (state-dict prefix `module.`); mean and std are (3, 1, 1) non-persistent buffers.
    """

    def __init__(self, module, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.module = module
        self.register_buffer('mean', torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, x):
        return self.module((x - self.mean) / self.std)


def create_without_ddpm_model(name, num_classes, activation='ReLU', width_factor=10, device='cpu', depth=34):
    """`--model` PreActResNet18 or WideResNet (depth 34, `width_factor`), `--activation`, as a NormalizedNet.

    `depth` (WideResNet only; 34 in the original) is a testing aid: e.g. 10 builds a small WRN-10-w.

    Draws the initial weights from torch's CPU generator in the original's construction order.
    Raises UserError for an unknown model or an activation the architecture does not have.
    """
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

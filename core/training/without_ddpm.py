"""The pieces of without_DDPM/train_cifar.py and eval_cifar.py: data, run-folder name, optimiser and LR schedule,
one training epoch and the per-epoch evaluation (PreActResNet-18 / WRN-34 on CIFAR without generated data).

The models are in core/models/without_ddpm.py, the distances and losses in core/losses/divergences.py, the attacks in
core/attacks/divergence.py, the objectives (--attack PGD / TRADES / Standard: attack, loss, flag rules) in
core/training/objectives.py. README.md (section "Without generated data") lists the commands.
"""
import os
import sys

import numpy as np
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR
from tqdm import tqdm

from core.attacks.divergence import CEPGD, DivergencePGD
from core.data.common import ArraySource, ImageDataset, eval_loader, get_transforms, load_split, train_loader
from core.data.semisup import SemiSupervisedSampler
from core.losses.divergences import DIVERGENCES, smooth_targets
from core.training.objectives import WITHOUT_DDPM_OBJECTIVES

__all__ = ['ATTACKS', 'DATASETS', 'DEFAULT_DATA_DIR', 'OPTIMIZERS', 'auto_name', 'data_folder', 'evaluate',
           'load_cifar', 'make_optimizer', 'seed_all', 'step_lr', 'train_epoch', 'train_loss']

DATASETS = {'CIFAR-10': ('cifar10', 10), 'CIFAR-100': ('cifar100', 100)}
ATTACKS = tuple(WITHOUT_DDPM_OBJECTIVES)  # the --attack choices: PGD, TRADES, Standard
OPTIMIZERS = ('SGDmom', 'Cosine', 'Adam')
STEP_MILESTONES = (100, 105)  # SGDmom: in (fractional) epochs, whatever --epochs is (docs/differences.md item 63)
# The original's `../../cifar-data`, as seen from without_DDPM/ (so a default run finds the same folder from
# the repository root); a --data-dir given on the command line is relative to the current directory
# (docs/differences.md item 67).
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                                 'cifar-data'))


def seed_all(seed):
    """The original's seeding point: numpy, torch (CPU and every CUDA device), then CUDA again (docs/differences.md
    item 65)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

def data_folder(root, dataset):
    """Where `dataset` is read: ROOT/cifar10 (or cifar100) if that folder exists, else ROOT itself.

    In that folder the core data layer reads train.npz/test.npz (the offline layout) or torchvision's files
    (`cifar-10-batches-py/`, `cifar-100-python/`, the original's layout under its `../../cifar-data`).
    """
    sub = os.path.join(root, DATASETS[dataset][0])
    return sub if os.path.isdir(sub) else root


def _split(root, dataset, split, transform):
    name, k = DATASETS[dataset]
    images, labels = load_split(name, data_folder(root, dataset), split, k)
    return ImageDataset([ArraySource(images, labels)], transform)


def load_cifar(root, dataset, batch_size, num_workers=2, seed=0, pin_memory=False, train=True):
    """(train loader or None, test loader, K) of CIFAR-10/100: the full 50000/10000 splits, no validation split.

    Train: RandomCrop(32, padding 4) + horizontal flip + ToTensor (also for CIFAR-100), shuffled per epoch, the
    last partial batch kept; the order and the augmentations are functions of (seed, epoch), see
    core.data.set_epoch (docs/differences.md item 74). Test: ToTensor, unshuffled. Images in [0, 1], no
    normalisation (the model does it, with CIFAR-10's mean/std also for CIFAR-100: docs/differences.md item 62).
    `train=False` reads only the test split.
    """
    train_tf, test_tf = get_transforms('cifar10', 'base')  # crop + flip for both datasets (no CIFAR-100 rotation)
    test_dl = eval_loader(_split(root, dataset, 'test', test_tf), batch_size, num_workers, pin_memory)
    train_dl = None
    if train:
        train_set = _split(root, dataset, 'train', train_tf)
        sampler = SemiSupervisedSampler(range(len(train_set)), [], batch_size, 0.0, None, seed)
        train_dl = train_loader(train_set, sampler, num_workers, pin_memory)
    return train_dl, test_dl, DATASETS[dataset][1]


# ---------------------------------------------------------------------------------------------------------------
# Run folder name
# ---------------------------------------------------------------------------------------------------------------

def auto_name(args):
    """The original's `--fname auto` name, e.g.
    PreActResNet18_PGD_linf_epoch110_eps8_wd0.0005_SGDmomlr0.05_divergenceLSE_clip0.4_seed1.

    str() of the raw flag values: the int defaults of --TRADESlambda, --clip_loss, --label_smoothing print as
    `6`, `0`, `0`, given values as floats (`6.0`).
    """
    name = args.model + ('' if args.activation == 'ReLU' else f'_{args.activation}')
    name += f'_{args.attack}' + (str(args.TRADESlambda) if args.attack == 'TRADES' else '')
    name += (f'_{args.norm}_epoch{args.epochs}_eps{args.epsilon}_wd{args.weight_decay}_'
             f'{args.optimizer}lr{args.lr_max}')
    name += f'_divergence{args.divergence}' if args.divergence in DIVERGENCES else f'_divergenceL{args.divergence}'
    if args.clip_loss > 0:
        name += f'_clip{args.clip_loss}'
    if args.not_clip_clean:
        name += '_notclean'
    if args.label_smoothing > 0:
        name += f'_labelsm{args.label_smoothing}'
    if args.seed != 0:
        name += f'_seed{args.seed}'
    return name


# ---------------------------------------------------------------------------------------------------------------
# Optimiser and LR schedule
# ---------------------------------------------------------------------------------------------------------------

def step_lr(lr_max, t):
    """SGDmom's LR at fractional epoch t = e + (i + 1) / n_b: lr_max before 100, /10 before 105, then /100."""
    if t < STEP_MILESTONES[0]:
        return lr_max
    if t < STEP_MILESTONES[1]:
        return lr_max / 10.
    return lr_max / 100.


def make_optimizer(params, name, lr_max, weight_decay, epochs):
    """(optimizer, per-batch scheduler or None) of `--optimizer`; one group, coupled decay on every parameter.

    SGDmom: SGD(momentum 0.9, not Nesterov), LR set per batch by `step_lr`. Cosine: SGD(momentum 0.9, Nesterov)
    with CosineAnnealingLR(T_max = epochs) stepped after every batch (so the LR has a period of 2 * epochs
    batches, as the original). Adam: betas (0.9, 0.999), eps 1e-8, constant LR. Kept from the original
    (docs/differences.md items 62 and 63).
    """
    params = list(params)
    if name == 'Adam':
        return torch.optim.Adam(params, lr=lr_max, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay), None
    opt = torch.optim.SGD(params, lr=lr_max, momentum=0.9, dampening=0, weight_decay=weight_decay,
                          nesterov=name == 'Cosine')
    if name == 'Cosine':
        return opt, CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    return opt, None


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------

def train_loss(model, attack, x, y, args, num_classes, bound, objective):
    """The loss of one batch (the model in train mode): attack, then the objective's forwards and loss.

    `objective` is the one `resolve_without_ddpm` gave at start-up and `attack` its `make_attack`, built once.
    x_adv = attack(x, y), or x clamped to [0, 1] without an attack (Standard); targets smoothed by
    --label_smoothing; then `objective.loss(model, x, x_adv, targets, args, bound)`: pgd_loss on model(x_adv) for
    PGD / Standard, trades_loss on model(x_adv) then model(x) for TRADES (both forwards update BatchNorm; the
    BatchNorm updates per batch are the original's, docs/differences.md item 58).
    """
    x_adv = attack(x, y) if attack is not None else torch.clamp(x, 0, 1)
    targets = smooth_targets(y, num_classes, args.label_smoothing)
    return objective.loss(model, x, x_adv, targets, args, bound)


def train_epoch(model, objective, attack, loader, opt, scheduler, args, epoch, num_classes, bound, device):
    """One epoch (0-based `epoch`) of the resolved `objective` with its training `attack`; returns the mean training
    loss over batches (not logged by the original)."""
    model.train()
    n_batches = len(loader)
    total = torch.zeros((), device=device)
    bar = tqdm(loader, desc=f'Epoch {epoch}', leave=False, dynamic_ncols=True, file=sys.stderr,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device), y.to(device)
        if args.optimizer == 'SGDmom':
            opt.param_groups[0].update(lr=step_lr(args.lr_max, epoch + (i + 1) / n_batches))
        loss = train_loss(model, attack, x, y, args, num_classes, bound, objective)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach()
        if i % 20 == 0:
            bar.set_postfix(loss=f'{total.item() / (i + 1):.4f}', refresh=False)
    bar.close()
    return total.item() / max(1, n_batches)


# ---------------------------------------------------------------------------------------------------------------
# Per-epoch evaluation
# ---------------------------------------------------------------------------------------------------------------

def evaluate(model, loader, args, num_classes, device):
    """Correct counts on the test set in eval mode: (clean, CE-PGD, divergence-PGD, n).

    Per batch: CE-PGD (R restarts, the per-sample best by CE), then DivergencePGD with --divergence (the last
    restart), both with --attack-iters, --restarts, --norm, eps --test_epsilon/255, step --test-pgd-alpha/255
    (the training --attack-iters and --restarts, as the original: docs/differences.md items 61 and 64); then the
    forwards of the clean and attacked images under no_grad (docs/differences.md item 71). Accuracy = correct / n.
    """
    eps, alpha = args.test_epsilon / 255., args.test_pgd_alpha / 255.
    ce_attack = CEPGD(model, eps, alpha, args.attack_iters, args.restarts, args.norm, 'ce')
    new_attack = DivergencePGD(model, eps, alpha, args.attack_iters, args.restarts, args.norm, args.divergence,
                               num_classes)
    model.eval()
    counts = torch.zeros(3, dtype=torch.long, device=device)
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        x_ce = ce_attack(x, y)
        x_new = new_attack(x, y)
        with torch.no_grad():
            for j, inputs in enumerate((x, x_ce, x_new)):
                counts[j] += (model(inputs).argmax(dim=1) == y).sum()
        n += len(y)
    clean, ce, new = counts.tolist()
    return clean, ce, new, n

"""What without_DDPM's scripts compose onto the one trainer: CIFAR data, `--fname auto`, optimiser, eval attacks."""
import os

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from core.attacks.divergence import CEPGD, DivergencePGD
from core.data.common import ArraySource, ImageDataset, eval_loader, get_transforms, load_split, train_loader
from core.data.semisup import SemiSupervisedSampler
from core.losses.divergences import DIVERGENCES
from core.training.objectives import WITHOUT_DDPM_OBJECTIVES, bind
from core.training.trainer import AdversarialTrainer

DATASETS = {'CIFAR-10': ('cifar10', 10), 'CIFAR-100': ('cifar100', 100)}
ATTACKS = tuple(WITHOUT_DDPM_OBJECTIVES)  # the --attack choices: PGD, TRADES, Standard
OPTIMIZERS = ('SGDmom', 'Cosine', 'Adam')
STEP_MILESTONES = (100, 105)  # SGDmom: in (fractional) epochs, whatever --epochs is (docs/differences.md item 63)
# the original's ../../cifar-data seen from without_DDPM/ (docs/differences.md item 67)
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                                 'cifar-data'))


def data_folder(root, dataset):
    sub = os.path.join(root, DATASETS[dataset][0])
    return sub if os.path.isdir(sub) else root


def _split(root, dataset, split, transform):
    name, k = DATASETS[dataset]
    images, labels = load_split(name, data_folder(root, dataset), split, k)
    return ImageDataset([ArraySource(images, labels)], transform)


def load_cifar(root, dataset, batch_size, num_workers=2, seed=0, pin_memory=False, train=True):
    """(train loader or None, test loader, K) of CIFAR-10/100, crop + flip (docs/differences.md items 62 and 74)."""
    train_tf, test_tf = get_transforms('cifar10', 'base')  # crop + flip for both datasets (no CIFAR-100 rotation)
    test_dl = eval_loader(_split(root, dataset, 'test', test_tf), batch_size, num_workers, pin_memory)
    train_dl = None
    if train:
        train_set = _split(root, dataset, 'train', train_tf)
        sampler = SemiSupervisedSampler(range(len(train_set)), [], batch_size, 0.0, None, seed)
        train_dl = train_loader(train_set, sampler, num_workers, pin_memory)
    return train_dl, test_dl, DATASETS[dataset][1]


def auto_name(args):
    """The original's `--fname auto` name from str() of the raw flags (an int default prints `6`, a given `6.0`)."""
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


def step_lr(lr_max, t):
    if t < STEP_MILESTONES[0]:
        return lr_max
    if t < STEP_MILESTONES[1]:
        return lr_max / 10.
    return lr_max / 100.


class PerBatchLR(LRScheduler):
    """lr = fn(base_lr, e + (i + 1) / n) for batch i of epoch e, the original's expression bit for bit."""

    def __init__(self, optimizer, fn, steps_per_epoch):
        self.fn, self.steps_per_epoch = fn, max(1, steps_per_epoch)
        super().__init__(optimizer)

    def get_lr(self):
        e, i = divmod(self.last_epoch, self.steps_per_epoch)
        return [self.fn(base, e + (i + 1) / self.steps_per_epoch) for base in self.base_lrs]

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k != 'fn'}


def make_optimizer(params, name, lr_max, weight_decay, epochs, steps_per_epoch=1):
    """(optimizer, per-batch scheduler); Cosine: T_max = epochs stepped per batch (docs/differences.md items 62, 63)."""
    params = list(params)
    if name == 'Adam':
        opt = torch.optim.Adam(params, lr=lr_max, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
        return opt, PerBatchLR(opt, lambda base, t: base, steps_per_epoch)
    opt = torch.optim.SGD(params, lr=lr_max, momentum=0.9, dampening=0, weight_decay=weight_decay,
                          nesterov=name == 'Cosine')
    if name == 'Cosine':
        return opt, CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    return opt, PerBatchLR(opt, step_lr, steps_per_epoch)


def eval_attacks(model, args, num_classes):
    """CE-PGD and DivergencePGD with the training iterations and restarts (docs/differences.md items 61 and 64)."""
    eps, alpha = args.test_epsilon / 255., args.test_pgd_alpha / 255.
    return (CEPGD(model, eps, alpha, args.attack_iters, args.restarts, args.norm, 'ce'),
            DivergencePGD(model, eps, alpha, args.attack_iters, args.restarts, args.norm, args.divergence,
                          num_classes))


def build_trainer(model, objective, args, num_classes, runtime, steps_per_epoch):
    opt, scheduler = make_optimizer(model.parameters(), args.optimizer, args.lr_max, args.weight_decay, args.epochs,
                                    steps_per_epoch)
    attack = objective.make_attack(model, args, num_classes)
    return AdversarialTrainer(model, opt, scheduler, bind(objective.loss, model, args, num_classes, attack), None,
                              runtime, per_batch_scheduler=True)

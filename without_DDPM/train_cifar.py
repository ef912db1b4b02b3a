#!/usr/bin/env python3
"""PGD-AT, TRADES or standard training on CIFAR-10/100 without generated data, with a chosen distance, label
smoothing and loss clipping (Pang et al., ICML 2022, Section 5.2; the original's without_DDPM/train_cifar.py).

    python train_cifar.py --model PreActResNet18 --epochs 110 --epsilon 8 --attack-iters 10 --pgd-alpha 2 \\
        --fname auto --weight_decay 5e-4 --batch-size 128 --optimizer SGDmom --seed 1 \\
        --lr-max 0.05 --attack PGD --divergence LSE --clip_loss 0.4

Run from without_DDPM/ (as the original) or from the repository root (`python without_DDPM/train_cifar.py`).
Writes trained_models/Triangle/{dataset}/{name}/ under the current directory: output.log, the three
*_record*.txt files, model_best.pth, model_{e}.pth for e > 99 (keys `module.*`), and state-last.pt
(everything --resume needs). An existing run folder is never overwritten unless --resume or --overwrite.
See docs/without_ddpm.md.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.attacks.divergence import NORMS  # noqa: E402
from core.data import set_epoch  # noqa: E402
from core.losses.divergences import check_divergence, clip_bound  # noqa: E402
from core.models.without_ddpm import ACTIVATIONS, MODELS, WRN_ACTIVATIONS, create_without_ddpm_model  # noqa: E402
from core.run.run_dir import STATE_FILE, check_run_dir  # noqa: E402
from core.training.objectives import resolve_without_ddpm  # noqa: E402
from core.training.without_ddpm import (  # noqa: E402
    ATTACKS,
    DATASETS,
    DEFAULT_DATA_DIR,
    OPTIMIZERS,
    auto_name,
    evaluate,
    load_cifar,
    make_optimizer,
    seed_all,
    train_epoch,
)
from core.utils.atomic import write_atomic  # noqa: E402
from core.utils.checkpoint import load_checkpoint, load_state_dict, save_atomic  # noqa: E402
from core.utils.distributed import add_device_argument, setup  # noqa: E402
from core.utils.errors import UserError, exit_on_user_error  # noqa: E402
from core.utils.logger import Logger  # noqa: E402

STATE_FORMAT_VERSION = 1
# Flags that may differ between a run and its --resume (they do not change the numbers).
RESUME_FREE_FLAGS = ('resume', 'overwrite', 'num_workers', 'stop_after', 'device', 'data_dir')
LOG_FORMAT, LOG_DATEFMT = '[%(asctime)s] - %(message)s', '%Y/%m/%d %H:%M:%S'


def divergence_arg(text):
    try:
        return check_divergence(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def get_args(argv=None):
    """The original's flags, defaults and choices (now enforced), then this project's additions."""
    p = argparse.ArgumentParser(description='Adversarial training on CIFAR without generated data.')
    p.add_argument('--model', default='PreActResNet18', choices=MODELS)
    p.add_argument('--batch-size', default=128, type=int)
    p.add_argument('--data-dir', default=None, type=str,
                   help='Root holding cifar10/ (cifar100/) with train.npz and test.npz, or torchvision\'s files '
                        '(default: ../../cifar-data seen from without_DDPM/, as the original).')
    p.add_argument('--epochs', default=120, type=int)
    p.add_argument('--lr-max', default=0.1, type=float)
    p.add_argument('--attack', default='PGD', type=str, choices=ATTACKS)
    p.add_argument('--epsilon', default=8, type=int)
    p.add_argument('--test_epsilon', default=8, type=int)
    p.add_argument('--attack-iters', default=10, type=int)
    p.add_argument('--restarts', default=1, type=int)
    p.add_argument('--pgd-alpha', default=2, type=float)
    p.add_argument('--test-pgd-alpha', default=2, type=float)
    p.add_argument('--norm', default='linf', type=str, choices=NORMS)
    p.add_argument('--fname', default='auto', type=str)
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--width-factor', default=10, type=int)
    p.add_argument('--activation', default='ReLU', type=str, choices=tuple(ACTIVATIONS))
    p.add_argument('--TRADESlambda', default=6, type=float)
    p.add_argument('--divergence', default='1', type=divergence_arg)
    p.add_argument('--weight_decay', default=5e-4, type=float)
    p.add_argument('--optimizer', default='SGDmom', type=str, choices=OPTIMIZERS)
    p.add_argument('--clip_loss', default=0, type=float)
    p.add_argument('--not_clip_clean', action='store_true')
    p.add_argument('--label_smoothing', default=0, type=float)
    p.add_argument('--dataset', default='CIFAR-10', type=str, choices=tuple(DATASETS))
    extra = p.add_argument_group('beyond the original')
    add_device_argument(extra)
    extra.add_argument('--num-workers', type=int, default=2, help='DataLoader worker processes (the original: 2).')
    extra.add_argument('--wrn-depth', type=int, default=34, help=argparse.SUPPRESS)  # testing aid: WRN-10-w
    extra.add_argument('--resume', action='store_true', help='Continue the run folder from its state-last.pt.')
    extra.add_argument('--overwrite', action='store_true',
                       help='Write a new run over the files of an existing run folder (nothing is deleted).')
    extra.add_argument('--stop-after', type=int, default=None, help=argparse.SUPPRESS)  # testing aid
    return p.parse_args(argv)


def validate(args):
    """Bad input the original accepted and crashed on late (or trained through): one UserError line each (the
    objective's own rules, e.g. --attack TRADES with --norm l2, are checked by resolve_without_ddpm)."""
    for flag in ('--epsilon', '--test_epsilon', '--pgd-alpha', '--test-pgd-alpha', '--lr-max', '--weight_decay',
                 '--TRADESlambda', '--clip_loss', '--label_smoothing'):
        value = getattr(args, flag[2:].replace('-', '_'))
        if value < 0:
            raise UserError(f'{flag} {value}: must be >= 0.')
    for flag in ('epochs', 'batch_size', 'restarts'):
        if getattr(args, flag) < 1:
            raise UserError(f'--{flag.replace("_", "-")} {getattr(args, flag)}: must be >= 1.')
    if args.attack_iters < 0 or args.num_workers < 0:
        raise UserError('--attack-iters and --num-workers must be >= 0.')
    if not args.clip_loss < 1:
        raise UserError(f'--clip_loss {args.clip_loss}: must be < 1 (the clip bound is the loss of a prediction '
                        f'with 1 - r on the true class).')
    if not args.label_smoothing < 1:
        raise UserError(f'--label_smoothing {args.label_smoothing}: must be < 1.')
    if args.model == 'WideResNet' and args.activation not in WRN_ACTIVATIONS:
        raise UserError(f'--activation {args.activation}: the WideResNet has {", ".join(WRN_ACTIVATIONS)} only.')
    if args.wrn_depth < 10 or (args.wrn_depth - 4) % 6:
        raise UserError(f'--wrn-depth {args.wrn_depth}: a WideResNet needs depth 6n + 4 >= 10 (e.g. 10 or 34).')
    if args.resume and args.overwrite:
        raise UserError('--resume continues a run and --overwrite starts a new one over it: give only one.')


def load_resume_state(folder, args):
    """The state of the run to continue, after checking that it matches the flags and is not finished."""
    state = load_checkpoint(os.path.join(folder, STATE_FILE))
    if state.get('format_version') != STATE_FORMAT_VERSION:
        raise UserError(f'--resume: {folder}/{STATE_FILE} has format {state.get("format_version")}, this code '
                        f'reads {STATE_FORMAT_VERSION}.')
    saved = state['args']
    diff = [k for k in vars(args) if k not in RESUME_FREE_FLAGS and saved.get(k) != getattr(args, k)]
    if diff:
        raise UserError(f'--resume: the flags differ from the saved run for {", ".join(diff)}; resume with the '
                        f'flags logged at the top of {os.path.join(folder, "output.log")}.')
    if state['epoch'] + 1 >= args.epochs:
        raise UserError(f'--resume: {folder} already completed its {args.epochs} epochs; nothing to do.')
    return state


def torch_rng_state():
    """The torch generators this script draws from (CPU, and CUDA's when present); numpy is seeded, never drawn."""
    return {'cpu': torch.get_rng_state(),
            'cuda': list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []}


def set_torch_rng_state(state):
    torch.set_rng_state(state['cpu'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_weights(model, path, test_acc, rob_kl, rob_new):
    """The original's .pth: {'state_dict' (keys module.*), 'test_robust_acc_KL', 'test_robust_acc_new', 'test_acc'}."""
    save_atomic({'state_dict': model.state_dict(), 'test_robust_acc_KL': rob_kl, 'test_robust_acc_new': rob_new,
                 'test_acc': test_acc}, path)


def main(argv=None):
    # ------------------------------------------------------------------ args
    args = get_args(argv)
    validate(args)
    objective = resolve_without_ddpm(args)  # --attack: the training attack, the loss and their flag rules
    if args.data_dir is None:
        args.data_dir = DEFAULT_DATA_DIR
    if args.fname == 'auto':
        name = auto_name(args)
        print('File name: ', name)
    else:
        name = args.fname
    args.fname = os.path.join('trained_models', 'Triangle', args.dataset, name)
    folder = args.fname

    # ------------------------------------------------------------------ device, run folder check
    runtime = setup(args.device)
    if runtime.distributed:
        raise UserError('train_cifar.py runs on one device (BatchNorm statistics are per batch); do not use torchrun.')
    device = runtime.device
    check_run_dir(folder, args, rename_hint='choose another --fname')
    state = load_resume_state(folder, args) if args.resume else None

    # ------------------------------------------------------------------ seed, data, clip bound, model
    seed_all(args.seed)
    train_loader, test_loader, num_classes = load_cifar(args.data_dir, args.dataset, args.batch_size,
                                                        args.num_workers, args.seed, device.type == 'cuda')
    bound = clip_bound(args.clip_loss, args.divergence, num_classes)
    print('Clip loss bound: ', bound)
    model = create_without_ddpm_model(args.model, num_classes, args.activation, args.width_factor, device,
                                      depth=args.wrn_depth)
    print('Use activation of ' + args.activation)
    opt, scheduler = make_optimizer(model.parameters(), args.optimizer, args.lr_max, args.weight_decay, args.epochs)
    attack = objective.make_attack(model, args, num_classes)

    # ------------------------------------------------------------------ run folder, logger
    os.makedirs(folder, exist_ok=True)
    logger = Logger(os.path.join(folder, 'output.log'), mode='a' if args.resume else 'w', fmt=LOG_FORMAT,
                    datefmt=LOG_DATEFMT, stream=sys.stderr)
    start_epoch, best, records = 0, 0.0, {'test_acc': [], 'KL': [], 'new': []}
    if state is not None:
        load_state_dict(model, state['model'])
        opt.load_state_dict(state['optimizer'])
        if scheduler is not None:
            scheduler.load_state_dict(state['scheduler'])
        start_epoch, best, records = state['epoch'] + 1, state['best'], state['records']
        set_torch_rng_state(state['rng'])
        logger.log(f'Resuming at epoch {start_epoch} of {args.epochs}.')
    else:
        logger.log(args)
        logger.log(f'Epoch \t Test Acc \t Test Rob. Acc (CE-PGD / {args.divergence}-PGD)')

    # ------------------------------------------------------------------ loop
    for epoch in range(start_epoch, args.epochs):
        start = time.time()
        set_epoch(train_loader, epoch)
        loss = train_epoch(model, objective, attack, train_loader, opt, scheduler, args, epoch, num_classes, bound,
                           device)
        clean, ce, new, n = evaluate(model, test_loader, args, num_classes, device)
        test_acc, rob_kl, rob_new = clean / n, ce / n, new / n
        logger.log('%d \t %.4f \t %.4f \t %.4f' % (epoch, test_acc, rob_kl, rob_new))
        print(f'epoch {epoch}: mean training loss {loss:.4f}, last LR {opt.param_groups[0]["lr"]:.6g}, '
              f'{time.time() - start:.1f} s')

        # -------------------------------------------------------------- save
        for key, value in (('test_acc', test_acc), ('KL', rob_kl), ('new', rob_new)):
            records[key].append(value)
        for key, file in (('test_acc', 'test_acc_record.txt'), ('KL', 'test_robust_acc_record_KL.txt'),
                          ('new', 'test_robust_acc_record_new.txt')):
            write_atomic(os.path.join(folder, file), lambda f, a=np.array(records[key]): np.savetxt(f, a))
        if epoch > 99:
            save_weights(model, os.path.join(folder, f'model_{epoch}.pth'), test_acc, rob_kl, rob_new)
        robust = min(ce, new) / n
        # model selection on the test set (docs/differences.md item 64)
        if robust > best:  # strict: ties keep the earlier epoch
            best = robust
            save_weights(model, os.path.join(folder, 'model_best.pth'), test_acc, rob_kl, rob_new)
        save_atomic({'format_version': STATE_FORMAT_VERSION, 'epoch': epoch, 'best': best, 'records': records,
                     'model': model.state_dict(), 'optimizer': opt.state_dict(),
                     'scheduler': None if scheduler is None else scheduler.state_dict(),
                     'rng': torch_rng_state(), 'args': dict(vars(args))}, os.path.join(folder, STATE_FILE))
        if args.stop_after is not None and epoch >= args.stop_after and epoch < args.epochs - 1:
            logger.log(f'Stopped after epoch {epoch} (--stop-after).')
            break
    logger.close()


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

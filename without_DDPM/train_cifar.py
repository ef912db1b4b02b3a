#!/usr/bin/env python3
"""PGD-AT, TRADES or standard training on CIFAR without generated data, with a chosen distance, label smoothing and
loss clipping, into trained_models/Triangle/{dataset}/{name}/ (the original's script; docs/without_ddpm.md)."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import numpy as np  # noqa: E402

from core.attacks.divergence import NORMS  # noqa: E402
from core.losses.divergences import check_divergence, clip_bound  # noqa: E402
from core.models.without_ddpm import ACTIVATIONS, MODELS, WRN_ACTIVATIONS, create_without_ddpm_model  # noqa: E402
from core.run.epoch import (  # noqa: E402
    check_space,
    non_finite_message,
    restore_state,
    run_state,
    save_stopped,
    start_meter,
    train_or_stop,
)
from core.run.run_dir import (  # noqa: E402
    STATE_FILE,
    RunLock,
    check_data,
    check_run_dir,
    data_fingerprint,
    load_resume_state,
    overwrite_run,
    save_state,
)
from core.training.objectives import resolve_without_ddpm  # noqa: E402
from core.training.trainer import Interrupted, evaluate  # noqa: E402
from core.training.without_ddpm import (  # noqa: E402
    ATTACKS,
    DATASETS,
    DEFAULT_DATA_DIR,
    OPTIMIZERS,
    auto_name,
    build_trainer,
    data_folder,
    eval_attacks,
    load_cifar,
)
from core.utils.atomic import write_atomic  # noqa: E402
from core.utils.checkpoint import save_atomic  # noqa: E402
from core.utils.compute import format_line  # noqa: E402
from core.utils.distributed import add_device_argument, setup  # noqa: E402
from core.utils.errors import SEED_MAX, ArgumentParser, UserError, check_number, exit_on_user_error  # noqa: E402
from core.utils.logger import Logger  # noqa: E402
from core.utils.preemption import StopRequest  # noqa: E402
from core.utils.utils import seed  # noqa: E402

STATE_FORMAT_VERSION = 2   # 2: the one trainer's state (1: this script's own loop, before it)
LOG_FORMAT, LOG_DATEFMT = '[%(asctime)s] - %(message)s', '%Y/%m/%d %H:%M:%S'


def divergence_arg(text):
    try:
        return check_divergence(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def get_args(argv=None):
    """The original's flags, defaults and choices (now enforced), then this project's additions."""
    p = ArgumentParser(description='Adversarial training on CIFAR without generated data.')
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
    extra.add_argument('--resume-from', default=None, metavar='FILE',
                       help='With --resume, while state-last.pt is damaged or missing: continue from FILE instead.')
    extra.add_argument('--overwrite', action='store_true',
                       help='Start a new run in an existing run folder; its files move to previous-DATE/ in it.')
    extra.add_argument('--stop-after', type=int, default=None, help=argparse.SUPPRESS)  # testing aid
    return p.parse_args(argv)


def validate(args):
    """One UserError line for bad input the original crashed on late or trained through (e.g. a NaN --lr-max)."""
    for flag in ('--epsilon', '--test_epsilon', '--pgd-alpha', '--test-pgd-alpha'):  # in units of 1/255
        check_number(flag, getattr(args, flag[2:].replace('-', '_')), 0, 255, example=8)
    for flag in ('--lr-max', '--weight_decay', '--TRADESlambda'):
        check_number(flag, getattr(args, flag[2:].replace('-', '_')), 0)
    check_number('--clip_loss', args.clip_loss, 0, 1, high_open=True, example=0.4)
    check_number('--label_smoothing', args.label_smoothing, 0, 1, high_open=True, example=0.1)
    for flag in ('epochs', 'batch_size', 'restarts'):
        check_number(f'--{flag.replace("_", "-")}', getattr(args, flag), 1)
    check_number('--attack-iters', args.attack_iters, 0)
    check_number('--num-workers', args.num_workers, 0)
    check_number('--seed', args.seed, 0, SEED_MAX, example=1)
    if args.model == 'WideResNet' and args.activation not in WRN_ACTIVATIONS:
        raise UserError(f'--activation {args.activation}: the WideResNet has {", ".join(WRN_ACTIVATIONS)} only.')
    if args.wrn_depth < 10 or (args.wrn_depth - 4) % 6:
        raise UserError(f'--wrn-depth {args.wrn_depth}: a WideResNet needs depth 6n + 4 >= 10 (e.g. 10 or 34).')
    if args.resume and args.overwrite:
        raise UserError('--resume continues a run and --overwrite starts a new one over it: give only one.')
    if args.resume_from and not args.resume:
        raise UserError('--resume-from names the state a --resume continues from: add --resume, or drop it.')


def save_weights(model, path, test_acc, rob_kl, rob_new):
    """The original's .pth: {'state_dict' (keys module.*), 'test_robust_acc_KL', 'test_robust_acc_new', 'test_acc'}."""
    save_atomic({'state_dict': model.state_dict(), 'test_robust_acc_KL': rob_kl, 'test_robust_acc_new': rob_new,
                 'test_acc': test_acc}, path)


def main(argv=None):
    with StopRequest(immediate=True) as stop, RunLock() as lock:   # signals: core/utils/preemption.py
        return run(stop, lock, argv)


def run(stop, lock, argv=None):
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
    runtime = setup(args.device)
    if runtime.distributed:
        raise UserError('train_cifar.py runs on one device (BatchNorm statistics are per batch); do not use torchrun.')
    lock.acquire(folder, 'choose another --fname')  # one live process per run folder, before any data is read
    check_run_dir(folder, args, rename_hint='choose another --fname')
    state = (load_resume_state(folder, args, args.epochs, STATE_FORMAT_VERSION, 'output.log') if args.resume
             else None)

    seed(args.seed)  # the original's seeding point (docs/differences.md item 65)
    train_loader, test_loader, num_classes = load_cifar(args.data_dir, args.dataset, args.batch_size,
                                                        args.num_workers, args.seed, runtime.device.type == 'cuda')
    data = data_fingerprint(train_loader, data_folder(args.data_dir, args.dataset))
    check_data(state and state.get('data'), data, args, folder)   # a resume trains on the run's data
    print('Clip loss bound: ', clip_bound(args.clip_loss, args.divergence, num_classes))
    model = create_without_ddpm_model(args.model, num_classes, args.activation, args.width_factor, runtime.device,
                                      depth=args.wrn_depth)
    print('Use activation of ' + args.activation)
    trainer = build_trainer(model, objective, args, num_classes, runtime, len(train_loader))
    test_attacks = (None,) + eval_attacks(model, args, num_classes)

    check_space(trainer, runtime, folder, fresh=state is None)   # before anything is written
    os.makedirs(folder, exist_ok=True)
    if args.overwrite:
        overwrite_run(folder)   # the earlier run's files into previous-<date>/, before anything new is written
    logger = Logger(os.path.join(folder, 'output.log'), mode='a' if args.resume else 'w', fmt=LOG_FORMAT,
                    datefmt=LOG_DATEFMT, stream=sys.stderr)
    start_epoch, best, records = 0, 0.0, {'test_acc': [], 'KL': [], 'new': []}
    if state is not None:
        restore_state(trainer, state, runtime)
        start_epoch, best, records = state['epoch'], state['best'], state['records']
        logger.log(f'Resuming at epoch {start_epoch} of {args.epochs}.')
    else:
        logger.log(args)
        logger.log(f'Epoch \t Test Acc \t Test Rob. Acc (CE-PGD / {args.divergence}-PGD)')
    meter = start_meter(trainer, runtime, logger, test_loader, 'none', state)

    def stop_message(e):
        return non_finite_message(e, folder, logger, args.lr_max, '--lr-max', can_change_lr=False, first_epoch=0)

    partial = None if state is None else state.get('partial')   # a run stopped mid-epoch continues there
    state = state or {'format_version': STATE_FORMAT_VERSION, 'epoch': 0, 'best': best, 'records': records,
                      'compute': (0.0, 0), 'args': dict(vars(args)), 'data': data}
    trainer.stop, stop.immediate = stop, False   # from here a signal stops after the current step, then saves
    state_path, stop_code = os.path.join(folder, STATE_FILE), None
    for epoch in range(start_epoch, args.epochs):
        try:
            loss = train_or_stop(trainer, train_loader, epoch, stop_message, resume=partial)['loss']
        except Interrupted as e:
            stop_code = save_stopped(trainer, runtime, logger, state_path, stop, state, e)
            break
        partial = None
        (_, test_acc), (_, rob_kl), (_, rob_new) = evaluate(model, test_loader, runtime, trainer.prepare,
                                                            test_attacks)
        logger.log('%d \t %.4f \t %.4f \t %.4f' % (epoch, test_acc, rob_kl, rob_new))
        m = meter.epoch(trainer.last_epoch_images, trainer.last_epoch_seconds, epoch + 1, args.epochs)
        logger.log(format_line(m))
        print(f'epoch {epoch}: mean training loss {loss:.4f}, next LR {trainer.last_lr():.6g}')

        for key, value in (('test_acc', test_acc), ('KL', rob_kl), ('new', rob_new)):
            records[key].append(value)
        for key, file in (('test_acc', 'test_acc_record.txt'), ('KL', 'test_robust_acc_record_KL.txt'),
                          ('new', 'test_robust_acc_record_new.txt')):
            write_atomic(os.path.join(folder, file), lambda f, a=np.array(records[key]): np.savetxt(f, a))
        if epoch > 99:
            save_weights(model, os.path.join(folder, f'model_{epoch}.pth'), test_acc, rob_kl, rob_new)
        robust = min(rob_kl, rob_new)
        check_space(trainer, runtime, folder)
        # model selection on the test set (docs/differences.md item 64)
        if robust > best:  # strict: ties keep the earlier epoch
            best = robust
            save_weights(model, os.path.join(folder, 'model_best.pth'), test_acc, rob_kl, rob_new)
        state = {'format_version': STATE_FORMAT_VERSION, 'epoch': epoch + 1, 'best': best, 'records': records,
                 'compute': (meter.seconds, meter.images), 'args': dict(vars(args)), 'data': data}
        save_state(run_state(trainer, runtime, **state), folder)
        if stop.signum is not None and epoch < args.epochs - 1:
            stop_code = save_stopped(trainer, runtime, logger, state_path, stop, state)
            break
        if args.stop_after is not None and epoch >= args.stop_after and epoch < args.epochs - 1:
            logger.log(f'Stopped after epoch {epoch} (--stop-after).')
            stop_code = 0
            break
    if stop_code is None:
        logger.log('Compute-\t{:.2f} device-hours of training in all, {:.3g} FLOP.'.format(
            meter.seconds / 3600, meter.images * meter.flop_per_image))
    logger.close()
    return stop_code


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

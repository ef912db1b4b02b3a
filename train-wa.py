#!/usr/bin/env python3
"""Adversarial training with weight averaging: TRADES-KL, SCORE-LSE, Madry PGD-AT or MART.

The two training commands of the original README (CIFAR-10 with 1M DDPM images, WRN-28-10-Swish):

    python train-wa.py --data-dir DATA --log-dir LOGS --desc trades-kl --data cifar10s \\
        --batch-size 512 --model wrn-28-10-swish --num-adv-epochs 400 --lr 0.2 --beta 5.0 \\
        --unsup-fraction 0.7 --aux-data-filename DATA/cifar10_ddpm.npz --ls 0.1
    python train-wa.py ... --desc score-lse ... --beta 4.0 --LSE --ls 0

Outputs in LOG_DIR = --log-dir/--desc: args.txt, log-train.log, stats_adv.csv, weights-best.pt,
weights-last.pt (the reference's files), state-last.pt (everything `--resume` needs) and curves.png (the
curves of stats_adv.csv). An existing run folder is never deleted: the script stops unless --resume or
--overwrite is given (docs/differences.md item 5).
Multi-process: `torchrun --nproc_per_node N train-wa.py ...` (DDP; --batch-size stays the global batch).
See docs/training.md.
"""
import os
import sys
import time

import torch

from core.attacks import VARIABLE_BATCH_ATTACKS
from core.data import get_data_info, load_data
from core.run.epoch import (
    account,
    adversarial_test,
    final_record,
    save_epoch,
    save_stopped,
    start_meter,
    start_run,
    train_epoch,
)
from core.run.parser import check_train_flags, parser_train
from core.run.run_dir import STATE_FILE, STATE_FORMAT_VERSION, check_run_dir, load_resume_state, open_run, saved_lr
from core.training.builder import build_trainer
from core.training.trainer import Interrupted
from core.utils.distributed import barrier, cleanup, setup
from core.utils.errors import UserError, exit_on_user_error
from core.utils.preemption import StopRequest
from core.utils.tensorboard import TensorBoard, require_tensorboard
from core.utils.utils import seed


def dataparallel_note(runtime, gpus):
    """The one-line note for a single-process run on a host with `gpus` > 1 visible GPUs (else None): the
    reference wrapped the model in DataParallel there, so its BatchNorm saw batch/N images per replica
    (docs/differences.md item 46)."""
    if not runtime.is_primary or runtime.distributed or runtime.device.type != 'cuda' or gpus < 2:
        return None
    return (f'Note: {gpus} GPUs are visible but this run uses one; the reference wrapped the model in DataParallel '
            f'over all of them (BatchNorm statistics per batch/{gpus} images): `torchrun --nproc_per_node {gpus} '
            f'train-wa.py ...` reproduces that.')


def check_runtime(args, runtime):
    """The device and process-count rules of the flags (one UserError each), and cudnn's autotuning."""
    note = dataparallel_note(runtime, torch.cuda.device_count() if runtime.device.type == 'cuda' else 0)
    if note:
        print(note)
    if runtime.distributed and args.batch_size % runtime.world_size:
        raise UserError(f'--batch-size {args.batch_size} is the global batch: it must be divisible by the '
                        f'{runtime.world_size} processes.')
    if args.sync_bn and runtime.device.type != 'cuda':
        raise UserError('--sync-bn needs CUDA (torch SyncBatchNorm runs on GPUs only); drop it on CPU.')
    # APGD: new shapes every restart (docs/differences.md items 32 and 48)
    torch.backends.cudnn.benchmark = args.attack not in VARIABLE_BATCH_ATTACKS


def main():
    with StopRequest(immediate=True) as stop:   # SIGTERM, SIGUSR1, Ctrl-C: core/utils/preemption.py
        return run(stop)


def run(stop):
    # ------------------------------------------------------------------ args
    args = parser_train().parse_args()
    objective = check_train_flags(args)  # the training objective, resolved once (core/training/objectives.py)
    if args.tensorboard:
        require_tensorboard()  # the optional package, checked before anything is written
    # --debug: 1 epoch, the schedules still sized for --num-adv-epochs (docs/differences.md item 16)
    NUM_ADV_EPOCHS = 1 if args.debug else args.num_adv_epochs
    DATA_DIR = os.path.join(args.data_dir, args.data)
    LOG_DIR = os.path.join(args.log_dir, args.desc)

    # ------------------------------------------------------------------ device / AMP / DDP
    runtime = setup(args.device, args.amp)
    primary = runtime.is_primary
    check_runtime(args, runtime)
    check_run_dir(LOG_DIR, args, resumable_without_state=('args.txt',))  # args.txt only: killed before epoch 1 ended
    state = load_resume_state(LOG_DIR, args, NUM_ADV_EPOCHS) if args.resume else None
    barrier(runtime)  # every process has checked before rank 0 writes anything

    # ------------------------------------------------------------------ data (data and model come before the run
    # folder, so that bad input leaves nothing behind)
    info = get_data_info(DATA_DIR)
    seed(args.seed)
    _, _, _, train_dataloader, test_dataloader, eval_dataloader = load_data(
        DATA_DIR, args.batch_size, args.batch_size_validation, num_workers=args.num_workers,
        use_augmentation=args.augment, shuffle_train=True, aux_data_filename=args.aux_data_filename,
        unsup_fraction=args.unsup_fraction, validation=True, seed=args.seed, rank=runtime.rank,
        world_size=runtime.world_size, pin_memory=runtime.device.type == 'cuda', val_size=args.validation_size)

    # ------------------------------------------------------------------ model, EMA, wrap, optimizer, scheduler, attacks
    seed(args.seed)
    if args.tau and primary:
        print('Using WA.')
    # core/training/builder.py: the reference's construction order and seeds (docs/differences.md item 41)
    trainer = build_trainer(info, args, runtime, objective=objective)

    # ------------------------------------------------------------------ run folder + logger
    logger = open_run(LOG_DIR, args, runtime, new_run=state is None)
    # args.txt: written now for a new run (or a restart before any saved epoch); with a changed --lr, together
    # with the first state file that uses it (so that args.txt always holds the flags of state-last.pt)
    args_changed = state is not None and saved_lr(LOG_DIR) != args.lr
    if args.debug and primary:
        print('Debug mode: 1 epoch (schedules sized for {} epochs).'.format(args.num_adv_epochs))

    # ------------------------------------------------------------------ resume
    start_epoch, best, rows, res = start_run(trainer, state, args, runtime, logger, test_dataloader, NUM_ADV_EPOCHS,
                                             'RST Adversarial training for {} epochs')

    meter = start_meter(trainer, runtime, logger, test_dataloader, args.amp, state)
    board = TensorBoard(LOG_DIR, len(train_dataloader), start_epoch) if args.tensorboard and primary else None
    partial = None if state is None else state.get('partial')   # a run stopped mid-epoch continues there
    state = state or {'format_version': STATE_FORMAT_VERSION, 'epoch': 0, 'best': best, 'rows': rows,
                      'train_metrics': None, 'compute': (0.0, 0), 'args': dict(vars(args))}
    trainer.stop, stop.immediate = stop, False   # from here a signal stops after the current step, then saves
    stop_code = None

    # ------------------------------------------------------------------ loop
    for epoch in range(start_epoch, NUM_ADV_EPOCHS + 1):
        start = time.time()
        try:
            res, test_acc, epoch_metrics = train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch,
                                                       args, LOG_DIR, board.step if board else None, partial)
        except Interrupted as e:
            stop_code = save_stopped(trainer, runtime, logger, os.path.join(LOG_DIR, STATE_FILE), stop, state, e)
            break
        partial = None
        adversarial_test(trainer, logger, test_dataloader, res, epoch_metrics,  # docs/differences.md item 40
                         epoch % args.adv_eval_freq == 0 or epoch == NUM_ADV_EPOCHS)
        eval_adv_acc = trainer.eval(eval_dataloader, adversarial=True)
        logger.log('Adversarial Accuracy-\tEval: {:.2f}%.'.format(eval_adv_acc * 100))
        epoch_metrics['eval_adversarial_acc'] = eval_adv_acc
        account(meter, trainer, epoch, NUM_ADV_EPOCHS, logger, epoch_metrics)  # the last columns of the row
        rows.append(epoch_metrics)
        if board is not None:
            board.epoch(epoch, epoch_metrics)

        # -------------------------------------------------------------- save
        new_best = eval_adv_acc >= best[1]  # ties go to the later epoch
        if new_best:
            best = [test_acc, eval_adv_acc]
        state = {'format_version': STATE_FORMAT_VERSION, 'epoch': epoch, 'best': best, 'rows': rows,
                 'train_metrics': res, 'compute': (meter.seconds, meter.images), 'args': dict(vars(args))}
        save_epoch(trainer, runtime, logger, LOG_DIR, new_best, rows, state, start, args if args_changed else None)
        args_changed = False
        if stop.signum is not None and epoch < NUM_ADV_EPOCHS:
            stop_code = save_stopped(trainer, runtime, logger, os.path.join(LOG_DIR, STATE_FILE), stop, state)
            break
        if args.stop_after is not None and epoch >= args.stop_after and epoch < NUM_ADV_EPOCHS:
            logger.log('Stopped after epoch {} (--stop-after).'.format(epoch))
            stop_code = 0
            break

    if stop_code is None:
        final_record(trainer, logger, train_dataloader, res, best, 'Eval', meter)
    if board is not None:
        board.close()
    cleanup()
    return stop_code


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

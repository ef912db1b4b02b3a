#!/usr/bin/env python3
"""Adversarial training with weight averaging: TRADES-KL, SCORE-LSE, Madry PGD-AT or MART (docs/training.md); an
existing run folder is never deleted (docs/differences.md item 5)."""
import os
import sys

import torch

from core.attacks import VARIABLE_BATCH_ATTACKS
from core.data import get_data_info, load_data
from core.run.epoch import adversarial_test, check_space, run_epochs
from core.run.parser import check_train_flags, parser_train
from core.run.run_dir import RunLock, check_data, check_run_dir, data_fingerprint, load_resume_state, open_run
from core.training.builder import build_trainer
from core.utils.distributed import barrier, cleanup, setup
from core.utils.errors import UserError, exit_on_user_error
from core.utils.preemption import StopRequest
from core.utils.tensorboard import TensorBoard, require_tensorboard
from core.utils.utils import seed


def dataparallel_note(runtime, gpus):
    """A note for one process on a host with several GPUs, where the reference used DataParallel (differences 46)."""
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
    with StopRequest(immediate=True) as stop, RunLock() as lock:   # signals: core/utils/preemption.py
        return run(stop, lock)


def run(stop, lock):
    args = parser_train().parse_args()
    objective = check_train_flags(args)  # the training objective, resolved once (core/training/objectives.py)
    if args.tensorboard:
        require_tensorboard()  # the optional package, checked before anything is written
    # --debug: 1 epoch, the schedules still sized for --num-adv-epochs (docs/differences.md item 16)
    NUM_ADV_EPOCHS = 1 if args.debug else args.num_adv_epochs
    DATA_DIR = os.path.join(args.data_dir, args.data)
    LOG_DIR = os.path.join(args.log_dir, args.desc)

    runtime = setup(args.device, args.amp)
    primary = runtime.is_primary
    check_runtime(args, runtime)
    if runtime.is_primary:  # one lock per run folder, before any data is read
        lock.acquire(LOG_DIR, 'choose another --log-dir or --desc')
    check_run_dir(LOG_DIR, args, resumable_without_state=('args.txt',))  # args.txt only: killed before epoch 1 ended
    state = load_resume_state(LOG_DIR, args, NUM_ADV_EPOCHS, primary=runtime.is_primary) if args.resume else None
    barrier(runtime)  # every process has checked before rank 0 writes anything

    # folder, so that bad input leaves nothing behind)
    info = get_data_info(DATA_DIR)
    seed(args.seed)
    _, _, _, train_dataloader, test_dataloader, eval_dataloader = load_data(
        DATA_DIR, args.batch_size, args.batch_size_validation, num_workers=args.num_workers,
        use_augmentation=args.augment, shuffle_train=True, aux_data_filename=args.aux_data_filename,
        unsup_fraction=args.unsup_fraction, validation=True, seed=args.seed, rank=runtime.rank,
        world_size=runtime.world_size, pin_memory=runtime.device.type == 'cuda', val_size=args.validation_size)
    data = data_fingerprint(train_dataloader, DATA_DIR, *(args.aux_data_filename or '').split(','))
    check_data(state and state.get('data'), data, args, LOG_DIR)   # a resume trains on the run's data

    seed(args.seed)
    if args.tau and primary:
        print('Using WA.')
    # core/training/builder.py: the reference's construction order and seeds (docs/differences.md item 41)
    trainer = build_trainer(info, args, runtime, objective=objective)

    check_space(trainer, runtime, LOG_DIR, fresh=state is None)   # before anything is written
    logger = open_run(LOG_DIR, args, runtime, new_run=state is None)
    if args.debug and primary:
        print('Debug mode: 1 epoch (schedules sized for {} epochs).'.format(args.num_adv_epochs))
    board = TensorBoard(LOG_DIR, len(train_dataloader), state['epoch'] + 1 if state else 1) \
        if args.tensorboard and primary else None

    def measure(epoch, res, row):
        adversarial_test(trainer, logger, test_dataloader, res, row,  # docs/differences.md item 40
                         epoch % args.adv_eval_freq == 0 or epoch == NUM_ADV_EPOCHS)
        row['eval_adversarial_acc'] = eval_adv_acc = trainer.eval(eval_dataloader, adversarial=True)
        logger.log('Adversarial Accuracy-\tEval: {:.2f}%.'.format(eval_adv_acc * 100))
        return eval_adv_acc, {}

    code = run_epochs(trainer, runtime, logger, args, LOG_DIR, (train_dataloader, test_dataloader), state,
                      NUM_ADV_EPOCHS, stop, measure, 'Eval', 'RST Adversarial training for {} epochs', board, data=data)
    if board is not None:
        board.close()
    cleanup()
    return code


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

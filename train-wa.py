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
--overwrite is given.
Multi-process: `torchrun --nproc_per_node N train-wa.py ...` (DDP; --batch-size stays the global batch).
See README.md, section Training.
"""
import json
import os
import re
import sys
import time

import pandas as pd
import torch

from core.attacks import VARIABLE_BATCH_ATTACKS
from core.builder import build_trainer
from core.data import SEMISUP_DATASETS, get_data_info, load_data, set_epoch, validate_unsup_fraction
from core.errors import SEED_MAX, UserError, check_number, exit_on_user_error
from core.objectives import check_beta
from core.objectives import resolve as resolve_objective
from core.utils import faults
from core.utils.checkpoint import load_checkpoint, save_atomic
from core.utils.distributed import all_gather_object, barrier, cleanup, setup
from core.utils.faults import fault_point
from core.utils.logger import Logger
from core.utils.parser import parser_train
from core.utils.plotting import write_run_curves
from core.utils.rng import rng_state, set_rng_state
from core.utils.run_dir import STATE_FILE
from core.utils.run_dir import check_run_dir as check_folder
from core.utils.tensorboard import TensorBoard, require_tensorboard
from core.utils.train import NonFiniteLoss, pretrained_path
from core.utils.utils import format_time, seed

STATE_FORMAT_VERSION = 1
# Flags that may differ between a run and its --resume (they do not change the numbers).
RESUME_FREE_FLAGS = ('resume', 'overwrite', 'num_workers', 'stop_after', 'device', 'data_dir', 'log_dir',
                     'aux_data_filename', 'resume_changed_flags', 'tensorboard')
# Flags a resume may change on purpose, named in --resume-changed-flags (README.md, section Training).
RESUME_CHANGEABLE_FLAGS = ('lr',)
# Temporary files of the writers of the run folder (save_atomic, write_csv, curves.png): left behind by a killed
# process.
STALE_TEMP_FILES = re.compile(r'^(\.(weights-best|weights-last|state-last)\.pt\..*\.tmp'
                              r'|\.curves\.png\..*\.tmp|(stats_adv\.csv|args\.txt)\.tmp)$')


def validate(args):
    """Bad flags and combinations the reference silently ignores or fails on late: one UserError line each,
    before anything is written."""
    check_number('--attack-eps', args.attack_eps, 0, low_open=True, example='8/255')
    check_number('--attack-step', args.attack_step, 0, low_open=True, example='2/255')
    check_number('--attack-iter', args.attack_iter, 1, example=10)
    check_number('--lr', args.lr, 0, low_open=True, example=0.4)
    check_number('--weight-decay', args.weight_decay, 0, example='5e-4')
    if args.beta is not None:
        check_number('--beta', args.beta, 0, example=5.0)
    check_number('--clip_value', args.clip_value, 0, example=0)
    check_number('--ls', args.ls, 0, 1, high_open=True, example=0.1)
    check_number('--tau', args.tau, 0, 1, high_open=True, example=0.995)
    if args.clip_grad is not None:
        check_number('--clip-grad', args.clip_grad, 0, low_open=True, example=1.0)
    check_number('--seed', args.seed, 0, SEED_MAX, example=1)
    if args.stop_after is not None:
        check_number('--stop-after', args.stop_after, 1)
    check_beta(args)
    if args.num_adv_epochs < 1:
        raise UserError(f'--num-adv-epochs {args.num_adv_epochs}: at least 1 epoch is needed.')
    if args.adv_eval_freq < 1:
        raise UserError(f'--adv-eval-freq {args.adv_eval_freq}: must be >= 1.')
    if args.batch_size < 1 or args.batch_size_validation < 1:
        raise UserError('--batch-size and --batch-size-validation must be >= 1.')
    if args.num_workers < 0:
        raise UserError(f'--num-workers {args.num_workers}: must be >= 0.')
    if args.validation_size < 1:
        raise UserError(f'--validation-size {args.validation_size}: must be >= 1.')
    if args.resume and args.overwrite:
        raise UserError('--resume continues a run and --overwrite starts a new one over it: give only one.')
    if args.resume_changed_flags and not args.resume:
        raise UserError('--resume-changed-flags names flags a --resume may change: add --resume, or drop it.')
    for name in args.resume_changed_flags:
        if name not in RESUME_CHANGEABLE_FLAGS:
            raise UserError(f'--resume-changed-flags {name}: only {", ".join(RESUME_CHANGEABLE_FLAGS)} may change '
                            f'on a resume (the others would change what the saved state means).')
    if args.data in SEMISUP_DATASETS:
        validate_unsup_fraction(args.unsup_fraction)
        if args.aux_data_filename is None:
            raise UserError(f'--data {args.data} trains on generated data: give --aux-data-filename (e.g. '
                            f'cifar10_ddpm.npz), or use --data {args.data[:-1]} for the real data only.')
        for f in args.aux_data_filename.split(','):
            if not os.path.exists(f):
                raise UserError(f'--aux-data-filename: {f} does not exist.')
    resolve_objective(args, weight_averaging=bool(args.tau))
    if args.scheduler == 'cosinew' and float(0.025 * args.num_adv_epochs) - 1 == 0:
        raise UserError(f'--scheduler cosinew cannot run {args.num_adv_epochs} epochs: torch OneCycleLR divides by '
                        f'zero when 0.025 * epochs = 1 (the reference crashes too); use e.g. 41 epochs.')
    if args.pretrained_file is not None and not os.path.isfile(pretrained_path(args)):
        raise UserError(f'--pretrained-file: {pretrained_path(args)} does not exist; give a run name under '
                        f'--log-dir (its weights-best.pt is read) or a checkpoint file.')


def check_run_dir(log_dir, args):
    """The shared run-folder policy; a --resume also restarts a run killed before its first saved epoch
    (args.txt without state-last.pt)."""
    check_folder(log_dir, args, STATE_FILE, resumable_without_state=('args.txt',))


def load_resume_state(log_dir, args, num_epochs):
    """The state file of the run to continue, after checking that it matches the flags and is not finished.

    A run killed before its first epoch was saved has args.txt but no state file: then None (start at epoch 1),
    after the same check of the flags against args.txt.
    """
    if not os.path.isfile(os.path.join(log_dir, STATE_FILE)):
        try:
            with open(os.path.join(log_dir, 'args.txt')) as f:
                saved = json.load(f)
        except ValueError as e:
            raise UserError(f'--resume: {log_dir}/args.txt is not JSON ({e}); start the run with '
                            f'--overwrite.') from None
        check_resume_flags(saved, args, log_dir)
        return None
    state = load_checkpoint(os.path.join(log_dir, STATE_FILE))
    if state.get('format_version') != STATE_FORMAT_VERSION:
        raise UserError(f'--resume: {log_dir}/{STATE_FILE} has format {state.get("format_version")}, this code '
                        f'reads {STATE_FORMAT_VERSION}.')
    check_resume_flags(state['args'], args, log_dir)
    if state['epoch'] >= num_epochs:
        raise UserError(f'--resume: {log_dir} already completed its {state["epoch"]} epochs; nothing to do.')
    return state


def check_resume_flags(saved, args, log_dir):
    """A resume runs with the saved flags, except RESUME_FREE_FLAGS and those named in --resume-changed-flags."""
    diff = [k for k in vars(args) if k not in RESUME_FREE_FLAGS and k not in args.resume_changed_flags
            and saved.get(k, None) != getattr(args, k)]
    if diff:
        allowed = [k for k in diff if k in RESUME_CHANGEABLE_FLAGS]
        hint = (f' (to change {", ".join(allowed)} on purpose, add --resume-changed-flags {",".join(allowed)})'
                if allowed else '')
        raise UserError(f'--resume: the flags differ from the saved run for {", ".join(diff)}; '
                        f'resume with the flags of {os.path.join(log_dir, "args.txt")}{hint}.')


def remove_stale_temp_files(log_dir):
    """Delete the temporary files a killed writer of this run folder left (only names matching STALE_TEMP_FILES)."""
    removed = sorted(n for n in os.listdir(log_dir) if STALE_TEMP_FILES.match(n))
    for name in removed:
        os.remove(os.path.join(log_dir, name))
    return removed


def dataparallel_note(runtime, gpus):
    """The one-line note for a single-process run on a host with `gpus` > 1 visible GPUs (else None): the
    reference wrapped the model in DataParallel there, so its BatchNorm saw batch/N images per replica."""
    if not runtime.is_primary or runtime.distributed or runtime.device.type != 'cuda' or gpus < 2:
        return None
    return (f'Note: {gpus} GPUs are visible but this run uses one; the reference wrapped the model in DataParallel '
            f'over all of them (BatchNorm statistics per batch/{gpus} images): `torchrun --nproc_per_node {gpus} '
            f'train-wa.py ...` reproduces that.')


def non_finite_message(e, log_dir, args, logger):
    """The one line of a run stopped by a non-finite loss (also written to log-train.log): where, what is kept,
    how to continue."""
    if e.epoch > 1:
        kept = (f'{log_dir} still holds epoch {e.epoch - 1}; continue from it with --resume, e.g. with a lower '
                f'learning rate: --resume --resume-changed-flags lr --lr {args.lr / 2:g}')
    else:
        kept = (f'no epoch was completed; start again with other flags (e.g. a lower --lr than {args.lr:g}) '
                f'and --overwrite')
    message = f'{e} with --lr {args.lr:g}: stopped, nothing of epoch {e.epoch} was saved. {kept}.'
    logger.logger.info(message)
    return message


def saved_lr(log_dir):
    """The --lr in log_dir/args.txt (None if unreadable)."""
    try:
        with open(os.path.join(log_dir, 'args.txt')) as f:
            return json.load(f).get('lr')
    except (OSError, ValueError, AttributeError):
        return None


def write_args(args, log_dir):
    """args.txt: JSON of every flag (indent 4), written to a temporary file and renamed."""
    path = os.path.join(log_dir, 'args.txt')
    with open(path + '.tmp', 'w') as f:
        json.dump(args.__dict__, f, indent=4)
    os.replace(path + '.tmp', path)


def write_csv(rows, path):
    """stats_adv.csv from a list of per-epoch dicts (the reference used the removed DataFrame.append)."""
    tmp = path + '.tmp'
    pd.DataFrame(rows).to_csv(tmp, index=False)
    fault_point(f'mid-write:{os.path.basename(path)}')
    os.replace(tmp, path)
    fault_point(f'after-write:{os.path.basename(path)}')


def open_run(log_dir, args, runtime, new_run):
    """Create the run folder (removing the temporary files of a killed writer on a resume), open log-train.log
    (appended on --resume) and, for a new run (`new_run`), write args.txt."""
    stale = []
    if runtime.is_primary:
        os.makedirs(log_dir, exist_ok=True)
        stale = remove_stale_temp_files(log_dir) if args.resume else []
    barrier(runtime)
    logger = Logger(os.path.join(log_dir, 'log-train.log'), mode='a' if args.resume else 'w',
                    enabled=runtime.is_primary)
    if runtime.is_primary and new_run:
        write_args(args, log_dir)
    logger.log('Using device: {}'.format(runtime.device.type))
    if stale:
        logger.log('Removed the temporary files of an interrupted write: {}.'.format(', '.join(stale)))
    return logger


def train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch, args, log_dir, on_step=None):
    """Train epoch `epoch` (a non-finite loss stops the run with one line), measure the clean test accuracy and
    log the epoch's first lines. Returns (train metrics, test accuracy, the epoch's CSV row so far)."""
    faults.set_epoch(epoch)
    logger.log('======= Epoch {} ======='.format(epoch))
    last_lr = trainer.last_lr()
    set_epoch(train_dataloader, epoch)
    try:
        res = trainer.train(train_dataloader, epoch=epoch, adversarial=True, on_step=on_step)
    except NonFiniteLoss as e:
        raise UserError(non_finite_message(e, log_dir, args, logger)) from None
    test_acc = trainer.eval(test_dataloader)

    logger.log('Loss: {:.4f}.\tLR: {:.4f}'.format(res['loss'], last_lr))
    if 'clean_acc' in res:
        logger.log('Standard Accuracy-\tTrain: {:.2f}%.\tTest: {:.2f}%.'.format(res['clean_acc'] * 100,
                                                                              test_acc * 100))
    else:
        logger.log('Standard Accuracy-\tTest: {:.2f}%.'.format(test_acc * 100))
    epoch_metrics = {'train_' + k: v for k, v in res.items()}
    epoch_metrics.update({'epoch': epoch, 'lr': last_lr, 'test_clean_acc': test_acc, 'test_adversarial_acc': ''})
    return res, test_acc, epoch_metrics


def adversarial_test(trainer, logger, test_dataloader, res, epoch_metrics, run):
    """Log the train adversarial accuracy and, if `run`, measure the test one (into `epoch_metrics`, returned)."""
    if not run:
        logger.log('Adversarial Accuracy-\tTrain: {:.2f}%.'.format(res['adversarial_acc'] * 100))
        return None
    test_adv_acc = trainer.eval(test_dataloader, adversarial=True)
    logger.log('Adversarial Accuracy-\tTrain: {:.2f}%.\tTest: {:.2f}%.'.format(res['adversarial_acc'] * 100,
                                                                             test_adv_acc * 100))
    epoch_metrics['test_adversarial_acc'] = test_adv_acc
    return test_adv_acc


def save_epoch(trainer, runtime, logger, log_dir, new_best, rows, state, start, args_to_write=None):
    """weights-best.pt (if `new_best`), weights-last.pt, the time line, stats_adv.csv, curves.png, args.txt (if
    `args_to_write`: after --resume-changed-flags) and, last, the state file (`state` plus the trainer, the
    global step and every process's RNG states): the state file is the epoch's commit point."""
    rngs = all_gather_object(rng_state(runtime.device), runtime)
    if runtime.is_primary:
        if new_best:
            trainer.save_model(os.path.join(log_dir, 'weights-best.pt'))
        trainer.save_model(os.path.join(log_dir, 'weights-last.pt'))
    logger.log('Time taken: {}'.format(format_time(time.time() - start)))
    if runtime.is_primary:
        write_csv(rows, os.path.join(log_dir, 'stats_adv.csv'))
        write_run_curves(log_dir)  # curves.png; a failure to draw is a warning, never a crash
        if args_to_write is not None:
            write_args(args_to_write, log_dir)
        save_atomic(dict(state, global_step=trainer.last_global_step, trainer=trainer.state_dict(), rng=rngs),
                    os.path.join(log_dir, STATE_FILE))
    barrier(runtime)


def final_record(trainer, logger, train_dataloader, res, best, label):
    """The closing lines; `label` names the best adversarial accuracy's split ('Eval' here, 'Test' in train.py)."""
    train_acc = res['clean_acc'] if 'clean_acc' in res else trainer.evaluate(train_dataloader, sharded=True)[0]
    logger.log('\nTraining completed.')
    logger.log('Standard Accuracy-\tTrain: {:.2f}%.\tTest: {:.2f}%.'.format(train_acc * 100, best[0] * 100))
    logger.log('Adversarial Accuracy-\tTrain: {:.2f}%.\t{}: {:.2f}%.'.format(res['adversarial_acc'] * 100, label,
                                                                           best[1] * 100))
    logger.log('Script Completed.')
    logger.close()


def main():
    # ------------------------------------------------------------------ args
    args = parser_train().parse_args()
    validate(args)
    if args.tensorboard:
        require_tensorboard()  # the optional package, checked before anything is written
    NUM_ADV_EPOCHS = 1 if args.debug else args.num_adv_epochs  # schedules: --num-adv-epochs (differences.md 16)
    DATA_DIR = os.path.join(args.data_dir, args.data)
    LOG_DIR = os.path.join(args.log_dir, args.desc)

    # ------------------------------------------------------------------ device / AMP / DDP
    runtime = setup(args.device, args.amp)
    primary = runtime.is_primary
    note = dataparallel_note(runtime, torch.cuda.device_count() if runtime.device.type == 'cuda' else 0)
    if note:
        print(note)
    check_run_dir(LOG_DIR, args)
    state = load_resume_state(LOG_DIR, args, NUM_ADV_EPOCHS) if args.resume else None
    barrier(runtime)  # every process has checked before rank 0 writes anything
    if runtime.distributed and args.batch_size % runtime.world_size:
        raise UserError(f'--batch-size {args.batch_size} is the global batch: it must be divisible by the '
                        f'{runtime.world_size} processes.')
    if args.sync_bn and runtime.device.type != 'cuda':
        raise UserError('--sync-bn needs CUDA (torch SyncBatchNorm runs on GPUs only); drop it on CPU.')
    torch.backends.cudnn.benchmark = args.attack not in VARIABLE_BATCH_ATTACKS  # APGD: new shapes every restart

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
    trainer = build_trainer(info, args, runtime)  # core/builder.py: the reference's construction order and seeds

    # ------------------------------------------------------------------ run folder + logger
    logger = open_run(LOG_DIR, args, runtime, new_run=state is None)
    # args.txt: written now for a new run (or a restart before any saved epoch); with a changed --lr, together
    # with the first state file that uses it (so that args.txt always holds the flags of state-last.pt)
    args_changed = state is not None and saved_lr(LOG_DIR) != args.lr
    if args.debug and primary:
        print('Debug mode: 1 epoch (schedules sized for {} epochs).'.format(args.num_adv_epochs))

    # ------------------------------------------------------------------ resume
    start_epoch, best, rows, res = 1, [0.0, 0.0], [], None
    if state is not None:
        trainer.load_state_dict(state['trainer'], global_step=state['global_step'])
        start_epoch, best, rows, res = state['epoch'] + 1, list(state['best']), state['rows'], state['train_metrics']
        rngs = state['rng']
        set_rng_state(rngs[runtime.rank] if len(rngs) == runtime.world_size else rngs[0], runtime.device)
        logger.log('\nResuming from epoch {} of {}.'.format(start_epoch, NUM_ADV_EPOCHS))
        if state['args']['lr'] != args.lr:  # --resume-changed-flags lr (checked in load_resume_state)
            trainer.rescale_lr(args.lr / state['args']['lr'])
            logger.log('--lr changed from {} to {} (--resume-changed-flags lr): the schedule continues at the '
                       'same step, scaled by {}.'.format(state['args']['lr'], args.lr, args.lr / state['args']['lr']))
    else:
        if args.resume:
            logger.log('\nNo epoch of this run was saved: starting it from epoch 1.')
        logger.log('\n\n')
        test_acc = trainer.eval(test_dataloader)
        logger.log('Standard Accuracy-\tTest: {:2f}%.'.format(test_acc * 100))  # sic: {:2f} (differences.md 30)
        logger.log('RST Adversarial training for {} epochs'.format(NUM_ADV_EPOCHS))

    board = TensorBoard(LOG_DIR, len(train_dataloader), start_epoch) if args.tensorboard and primary else None

    # ------------------------------------------------------------------ loop
    for epoch in range(start_epoch, NUM_ADV_EPOCHS + 1):
        start = time.time()
        res, test_acc, epoch_metrics = train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch, args,
                                                   LOG_DIR, on_step=board.step if board else None)
        adversarial_test(trainer, logger, test_dataloader, res, epoch_metrics,
                         epoch % args.adv_eval_freq == 0 or epoch == NUM_ADV_EPOCHS)
        eval_adv_acc = trainer.eval(eval_dataloader, adversarial=True)
        logger.log('Adversarial Accuracy-\tEval: {:.2f}%.'.format(eval_adv_acc * 100))
        epoch_metrics['eval_adversarial_acc'] = eval_adv_acc
        rows.append(epoch_metrics)
        if board is not None:
            board.epoch(epoch, epoch_metrics)

        # -------------------------------------------------------------- save
        new_best = eval_adv_acc >= best[1]  # ties go to the later epoch
        if new_best:
            best = [test_acc, eval_adv_acc]
        state = {'format_version': STATE_FORMAT_VERSION, 'epoch': epoch, 'best': best, 'rows': rows,
                 'train_metrics': res, 'args': dict(vars(args))}
        save_epoch(trainer, runtime, logger, LOG_DIR, new_best, rows, state, start, args if args_changed else None)
        args_changed = False
        if args.stop_after is not None and epoch >= args.stop_after and epoch < NUM_ADV_EPOCHS:
            logger.log('Stopped after epoch {} (--stop-after).'.format(epoch))
            if board is not None:
                board.close()
            cleanup()
            return

    # ------------------------------------------------------------------ final record
    final_record(trainer, logger, train_dataloader, res, best, 'Eval')
    if board is not None:
        board.close()
    cleanup()


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

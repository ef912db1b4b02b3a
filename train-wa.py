#!/usr/bin/env python3
"""Adversarial training with weight averaging: TRADES-KL, SCORE-LSE, Madry PGD-AT or MART (SPEC 2, 6-9).

The two training commands of the original README (CIFAR-10 with 1M DDPM images, WRN-28-10-Swish):

    python train-wa.py --data-dir DATA --log-dir LOGS --desc trades-kl --data cifar10s \\
        --batch-size 512 --model wrn-28-10-swish --num-adv-epochs 400 --lr 0.2 --beta 5.0 \\
        --unsup-fraction 0.7 --aux-data-filename DATA/cifar10_ddpm.npz --ls 0.1
    python train-wa.py ... --desc score-lse ... --beta 4.0 --LSE --ls 0

Outputs in LOG_DIR = --log-dir/--desc: args.txt, log-train.log, stats_adv.csv, weights-best.pt,
weights-last.pt (the reference's files) and state-last.pt (everything `--resume` needs). An existing run
folder is never deleted: the script stops unless --resume or --overwrite is given.
Multi-process: `torchrun --nproc_per_node N train-wa.py ...` (DDP; --batch-size stays the global batch).
See README.md, section Training.
"""
import json
import os
import random
import sys
import time

import numpy as np
import pandas as pd
import torch

from core.data import SEMISUP_DATASETS, get_data_info, load_data, set_epoch, validate_unsup_fraction
from core.errors import UserError, exit_on_user_error
from core.utils.checkpoint import load_checkpoint, save_atomic
from core.utils.distributed import all_gather_object, barrier, cleanup, setup
from core.utils.logger import Logger
from core.utils.parser import parser_train
from core.utils.run_dir import check_run_dir
from core.utils.train import Trainer, pretrained_path
from core.utils.utils import format_time, seed
from gowal21uncovering.utils.watrain import WATrainer

STATE_FORMAT_VERSION = 1
STATE_FILE = 'state-last.pt'
# Flags that may differ between a run and its --resume (they do not change the numbers).
RESUME_FREE_FLAGS = ('resume', 'overwrite', 'num_workers', 'stop_after', 'device', 'data_dir', 'log_dir',
                     'aux_data_filename')


def validate(args):
    """Bad flag combinations the reference silently ignores or fails on late: one UserError line each."""
    if (args.LSE or args.mart) and args.beta is None:
        flag = '--LSE' if args.LSE else '--mart'
        raise UserError(f'{flag} needs --beta (without it the reference silently trains Madry PGD-AT); '
                        f'e.g. {flag} --beta 4.0, or drop {flag}.')
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
    if args.data in SEMISUP_DATASETS:
        validate_unsup_fraction(args.unsup_fraction)
        if args.aux_data_filename is None:
            raise UserError(f'--data {args.data} trains on generated data: give --aux-data-filename (e.g. '
                            f'cifar10_ddpm.npz), or use --data {args.data[:-1]} for the real data only.')
        for f in args.aux_data_filename.split(','):
            if not os.path.exists(f):
                raise UserError(f'--aux-data-filename: {f} does not exist.')
    (WATrainer if args.tau else Trainer).check_flags(args)
    if args.scheduler == 'cosinew' and float(0.025 * args.num_adv_epochs) - 1 == 0:
        raise UserError(f'--scheduler cosinew cannot run {args.num_adv_epochs} epochs: torch OneCycleLR divides by '
                        f'zero when 0.025 * epochs = 1 (the reference crashes too); use e.g. 41 epochs.')
    if args.pretrained_file is not None and not os.path.isfile(pretrained_path(args)):
        raise UserError(f'--pretrained-file: {pretrained_path(args)} does not exist; give a run name under '
                        f'--log-dir (its weights-best.pt is read) or a checkpoint file.')


def load_resume_state(log_dir, args, num_epochs):
    """The state file of the run to continue, after checking that it matches the flags and is not finished."""
    state = load_checkpoint(os.path.join(log_dir, STATE_FILE))
    if state.get('format_version') != STATE_FORMAT_VERSION:
        raise UserError(f'--resume: {log_dir}/{STATE_FILE} has format {state.get("format_version")}, this code '
                        f'reads {STATE_FORMAT_VERSION}.')
    saved = state['args']
    diff = [k for k in vars(args) if k not in RESUME_FREE_FLAGS and saved.get(k, None) != getattr(args, k)]
    if diff:
        raise UserError(f'--resume: the flags differ from the saved run for {", ".join(diff)}; '
                        f'resume with the flags of {os.path.join(log_dir, "args.txt")}.')
    if state['epoch'] >= num_epochs:
        raise UserError(f'--resume: {log_dir} already completed its {state["epoch"]} epochs; nothing to do.')
    return state


def rng_state():
    """The RNG states of this process (torch CPU, CUDA, numpy, python) as tensors, lists and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {'torch': torch.get_rng_state(),
            'cuda': list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
            'numpy': {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                      'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
            'python': {'version': version, 'internal': list(internal), 'gauss_next': gauss_next}}


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss_next']))


def write_csv(rows, path):
    """stats_adv.csv from a list of per-epoch dicts (the reference used the removed DataFrame.append)."""
    tmp = path + '.tmp'
    pd.DataFrame(rows).to_csv(tmp, index=False)
    os.replace(tmp, path)


def open_run(log_dir, args, runtime):
    """Create the run folder, open log-train.log (appended on --resume), write args.txt (new runs only)."""
    if runtime.is_primary:
        os.makedirs(log_dir, exist_ok=True)
    barrier(runtime)
    logger = Logger(os.path.join(log_dir, 'log-train.log'), mode='a' if args.resume else 'w',
                    enabled=runtime.is_primary)
    if runtime.is_primary and not args.resume:
        with open(os.path.join(log_dir, 'args.txt'), 'w') as f:
            json.dump(args.__dict__, f, indent=4)
    logger.log('Using device: {}'.format(runtime.device.type))
    return logger


def train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch):
    """Train epoch `epoch`, measure the clean test accuracy and log the epoch's first lines.

    Returns (train metrics, test accuracy, the epoch's CSV row so far)."""
    logger.log('======= Epoch {} ======='.format(epoch))
    last_lr = trainer.last_lr()
    set_epoch(train_dataloader, epoch)
    res = trainer.train(train_dataloader, epoch=epoch, adversarial=True)
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


def save_epoch(trainer, runtime, logger, log_dir, new_best, rows, state, start):
    """weights-best.pt (if `new_best`), weights-last.pt, the time line, stats_adv.csv and the state file
    (`state` plus the trainer, the global step and every process's RNG states)."""
    rngs = all_gather_object(rng_state(), runtime)
    if runtime.is_primary:
        if new_best:
            trainer.save_model(os.path.join(log_dir, 'weights-best.pt'))
        trainer.save_model(os.path.join(log_dir, 'weights-last.pt'))
    logger.log('Time taken: {}'.format(format_time(time.time() - start)))
    if runtime.is_primary:
        write_csv(rows, os.path.join(log_dir, 'stats_adv.csv'))
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
    NUM_ADV_EPOCHS = 1 if args.debug else args.num_adv_epochs  # schedules stay sized for --num-adv-epochs (#16)
    DATA_DIR = os.path.join(args.data_dir, args.data)
    LOG_DIR = os.path.join(args.log_dir, args.desc)

    # ------------------------------------------------------------------ device / AMP / DDP
    runtime = setup(args.device, args.amp)
    primary = runtime.is_primary
    check_run_dir(LOG_DIR, args)
    state = load_resume_state(LOG_DIR, args, NUM_ADV_EPOCHS) if args.resume else None
    barrier(runtime)  # every process has checked before rank 0 writes anything
    if runtime.distributed and args.batch_size % runtime.world_size:
        raise UserError(f'--batch-size {args.batch_size} is the global batch: it must be divisible by the '
                        f'{runtime.world_size} processes.')
    if args.sync_bn and runtime.device.type != 'cuda':
        raise UserError('--sync-bn needs CUDA (torch SyncBatchNorm runs on GPUs only); drop it on CPU.')
    torch.backends.cudnn.benchmark = True

    # ------------------------------------------------------------------ data (data and model come before the run
    # folder, so that bad input leaves nothing behind)
    info = get_data_info(DATA_DIR)
    seed(args.seed)
    _, _, _, train_dataloader, test_dataloader, eval_dataloader = load_data(
        DATA_DIR, args.batch_size, args.batch_size_validation, num_workers=args.num_workers,
        use_augmentation=args.augment, shuffle_train=True, aux_data_filename=args.aux_data_filename,
        unsup_fraction=args.unsup_fraction, validation=True, seed=args.seed, rank=runtime.rank,
        world_size=runtime.world_size, pin_memory=runtime.device.type == 'cuda', val_size=args.validation_size)

    # ------------------------------------------------------------------ model, optimizer, scheduler, EMA
    seed(args.seed)
    if args.tau:
        if primary:
            print('Using WA.')
        trainer = WATrainer(info, args, runtime)
    else:
        trainer = Trainer(info, args, runtime)
    trainer.wrap(sync_bn=args.sync_bn, compile=args.compile)
    if runtime.distributed:  # same initial weights everywhere; then each process draws its own attack noise
        seed(args.seed + runtime.rank)

    # ------------------------------------------------------------------ run folder + logger
    logger = open_run(LOG_DIR, args, runtime)
    if args.debug and primary:
        print('Debug mode: 1 epoch (schedules sized for {} epochs).'.format(args.num_adv_epochs))

    # ------------------------------------------------------------------ resume
    start_epoch, best, rows, res = 1, [0.0, 0.0], [], None
    if args.resume:
        trainer.init_optimizer(args.num_adv_epochs)
        trainer.load_state_dict(state['trainer'])
        start_epoch, best, rows, res = state['epoch'] + 1, list(state['best']), state['rows'], state['train_metrics']
        trainer.restore_bn_momentum(state['global_step'])
        rngs = state['rng']
        set_rng_state(rngs[runtime.rank] if len(rngs) == runtime.world_size else rngs[0])
        logger.log('\nResuming from epoch {} of {}.'.format(start_epoch, NUM_ADV_EPOCHS))
    else:
        logger.log('\n\n')
        test_acc = trainer.eval(test_dataloader)
        logger.log('Standard Accuracy-\tTest: {:2f}%.'.format(test_acc * 100))  # sic: {:2f} (quirk 30)
        logger.log('RST Adversarial training for {} epochs'.format(NUM_ADV_EPOCHS))
        trainer.init_optimizer(args.num_adv_epochs)

    # ------------------------------------------------------------------ loop
    for epoch in range(start_epoch, NUM_ADV_EPOCHS + 1):
        start = time.time()
        res, test_acc, epoch_metrics = train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch)

        adversarial_test(trainer, logger, test_dataloader, res, epoch_metrics,
                         epoch % args.adv_eval_freq == 0 or epoch == NUM_ADV_EPOCHS)
        eval_adv_acc = trainer.eval(eval_dataloader, adversarial=True)
        logger.log('Adversarial Accuracy-\tEval: {:.2f}%.'.format(eval_adv_acc * 100))
        epoch_metrics['eval_adversarial_acc'] = eval_adv_acc
        rows.append(epoch_metrics)

        # -------------------------------------------------------------- save
        new_best = eval_adv_acc >= best[1]  # ties go to the later epoch
        if new_best:
            best = [test_acc, eval_adv_acc]
        state = {'format_version': STATE_FORMAT_VERSION, 'epoch': epoch, 'best': best, 'rows': rows,
                 'train_metrics': res, 'args': dict(vars(args))}
        save_epoch(trainer, runtime, logger, LOG_DIR, new_best, rows, state, start)
        if args.stop_after is not None and epoch >= args.stop_after and epoch < NUM_ADV_EPOCHS:
            logger.log('Stopped after epoch {} (--stop-after).'.format(epoch))
            cleanup()
            return

    # ------------------------------------------------------------------ final record
    final_record(trainer, logger, train_dataloader, res, best, 'Eval')
    cleanup()


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

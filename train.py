#!/usr/bin/env python3
"""Adversarial training without weight averaging: Madry PGD-AT, plain TRADES (--beta) or MART (--mart --beta), the
original's older train.py: train-wa.py's flags without --tau, no validation split, the test-set attack on its
epochs (docs/differences.md item 66); --LSE, --ls, --clip_value, --CutMix ignored with a warning (item 49)."""
import argparse
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
from core.utils.errors import exit_on_user_error
from core.utils.preemption import StopRequest
from core.utils.utils import seed

IGNORED_FLAGS = ('--LSE', '--ls', '--clip_value', '--CutMix', '--tensorboard')


def ignored_flags(argv):
    """The flags of IGNORED_FLAGS given on the command line (as `--flag` or `--flag=value`)."""
    return [f for f in IGNORED_FLAGS if any(a == f or a.startswith(f + '=') for a in argv)]


def validate(args):
    """train-wa.py's flag checks for the plain Trainer, with the ignored flags switched off; returns the objective
    they train (`core.training.objectives.resolve` of those flags)."""
    checked = argparse.Namespace(**vars(args))
    checked.tau, checked.LSE, checked.CutMix = 0, False, False
    return check_train_flags(checked)


def adversarial_test_epoch(epoch, num_epochs, freq):
    """train.py's adversarial test epochs: every `freq`-th, the last 5, and the last 11 when there are > 90
    (the original's, docs/differences.md item 66)."""
    return epoch % freq == 0 or epoch > num_epochs - 5 or (epoch >= num_epochs - 10 and num_epochs > 90)


def main(argv=None):
    with StopRequest(immediate=True) as stop, RunLock() as lock:   # signals: core/utils/preemption.py
        return run(stop, lock, argv)


def run(stop, lock, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser_train(tau=False).parse_args(argv)
    objective = validate(args)
    ignored = ignored_flags(argv)
    if ignored:
        print(f'warning: train.py ignores {", ".join(ignored)} (as the original\'s train.py, which trains Madry, '
              f'plain TRADES or MART); use train-wa.py for SCORE-LSE, label smoothing and CutMix.', file=sys.stderr)
    NUM_ADV_EPOCHS = 1 if args.debug else args.num_adv_epochs
    DATA_DIR = os.path.join(args.data_dir, args.data)
    LOG_DIR = os.path.join(args.log_dir, args.desc)

    runtime = setup(args.device, args.amp)
    if runtime.is_primary:  # one lock per run folder, before any data is read
        lock.acquire(LOG_DIR, 'choose another --log-dir or --desc')
    check_run_dir(LOG_DIR, args, resumable_without_state=('args.txt',))  # args.txt only: killed before epoch 1 ended
    state = load_resume_state(LOG_DIR, args, NUM_ADV_EPOCHS, primary=runtime.is_primary) if args.resume else None
    barrier(runtime)
    # APGD: new shapes every restart (docs/differences.md items 32 and 48)
    torch.backends.cudnn.benchmark = args.attack not in VARIABLE_BATCH_ATTACKS

    info = get_data_info(DATA_DIR)
    seed(args.seed)
    _, _, train_dataloader, test_dataloader = load_data(
        DATA_DIR, args.batch_size, args.batch_size_validation, num_workers=args.num_workers,
        use_augmentation=args.augment, shuffle_train=True, aux_data_filename=args.aux_data_filename,
        unsup_fraction=args.unsup_fraction, validation=False, seed=args.seed, rank=runtime.rank,
        world_size=runtime.world_size, pin_memory=runtime.device.type == 'cuda')
    data = data_fingerprint(train_dataloader, DATA_DIR, *(args.aux_data_filename or '').split(','))
    check_data(state and state.get('data'), data, args, LOG_DIR)   # a resume trains on the run's data
    seed(args.seed)  # the original's seeding points (docs/differences.md item 41)
    trainer = build_trainer(info, args, runtime, weight_averaging=False, objective=objective)

    check_space(trainer, runtime, LOG_DIR, fresh=state is None)   # before anything is written
    logger = open_run(LOG_DIR, args, runtime, new_run=state is None)
    test_adv_acc = [0.0 if state is None else state.get('test_adv_acc', 0.0)]  # the last measured (stale between)

    def measure(epoch, res, row):
        measured = adversarial_test(trainer, logger, test_dataloader, res, row,
                                    adversarial_test_epoch(epoch, NUM_ADV_EPOCHS, args.adv_eval_freq))
        test_adv_acc[0] = test_adv_acc[0] if measured is None else measured  # docs/differences.md item 66
        return test_adv_acc[0], {'test_adv_acc': test_adv_acc[0]}

    code = run_epochs(trainer, runtime, logger, args, LOG_DIR, (train_dataloader, test_dataloader), state,
                      NUM_ADV_EPOCHS, stop, measure, 'Test', 'Adversarial training for {} epochs', data=data)
    cleanup()
    return code


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

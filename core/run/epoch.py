"""The epochs of the training scripts: start or resume, train, test, account for the compute, save (the state file
last: the epoch's commit point), stop on a signal; the log lines and the CSV row are the reference's."""
import os
import shlex
import shutil
import sys
import time

import pandas as pd
import torch

from core.data import set_epoch
from core.run.plotting import write_run_curves
from core.run.run_dir import STATE_FILE, STATE_FORMAT_VERSION, save_state, saved_lr, write_args
from core.training.cost import flop_per_image
from core.training.epoch_metrics import NonFiniteLoss
from core.training.trainer import Interrupted
from core.utils import faults
from core.utils.atomic import write_atomic
from core.utils.compute import Meter, device_peak, format_line
from core.utils.distributed import all_gather_object, barrier
from core.utils.errors import UserError
from core.utils.preemption import exit_code
from core.utils.rng import rng_state, set_rng_state
from core.utils.utils import format_time


def non_finite_message(e, log_dir, logger, lr, lr_flag='--lr', can_change_lr=True, first_epoch=1):
    """The one line (also logged) of a run stopped by a non-finite loss: where, what is kept, how to continue."""
    retry = f'start again with other flags (e.g. a lower {lr_flag} than {lr:g}) and --overwrite'
    if e.epoch > first_epoch and can_change_lr:
        kept = (f'{log_dir} still holds epoch {e.epoch - 1}; continue from it with --resume, e.g. with a lower '
                f'learning rate: --resume --resume-changed-flags lr {lr_flag} {lr / 2:g}')
    elif e.epoch > first_epoch:
        kept = f'{log_dir} still holds epoch {e.epoch - 1}; {retry}'
    else:
        kept = f'no epoch was completed; {retry}'
    message = f'{e} with {lr_flag} {lr:g}: stopped, nothing of epoch {e.epoch} was saved. {kept}.'
    logger.logger.info(message)
    return message


def train_or_stop(trainer, loader, epoch, stop_message, on_step=None, resume=None):
    """`trainer.train` of `epoch` (`resume`: a stopped epoch's partial); a non-finite loss is `stop_message(e)`."""
    faults.set_epoch(epoch)
    set_epoch(loader, epoch)
    try:
        return trainer.train(loader, epoch=epoch, on_step=on_step, resume=resume)
    except NonFiniteLoss as e:
        raise UserError(stop_message(e)) from None


def resume_command(argv=None):
    """The command line that continues this run: the same flags, --overwrite and --resume-from dropped (the run
    continues from its new state-last.pt), --resume added."""
    argv = list(sys.argv if argv is None else argv)
    if '--resume-from' in argv:
        del argv[argv.index('--resume-from'):argv.index('--resume-from') + 2]
    argv = [a for a in argv if a != '--overwrite' and not a.startswith('--resume-from=')]
    return 'python ' + ' '.join(shlex.quote(a) for a in argv + ([] if '--resume' in argv else ['--resume']))


def save_stopped(trainer, runtime, logger, path, stop, fields, interrupted=None):
    """After a signal: the state (mid-epoch with the trainer's `interrupted`) into `path`, one line; the exit code."""
    where = 'after the last finished epoch' if interrupted is None else f'at batch {interrupted.batch} of epoch ' \
                                                                       f'{interrupted.epoch}'
    if interrupted is not None:
        fields = {k: v for k, v in fields.items() if k not in ('trainer', 'rng', 'global_step', 'partial')}
        state = run_state(trainer, runtime, **fields, partial=interrupted.partial)
        check_space(trainer, runtime, os.path.dirname(path))
        if runtime.is_primary:
            save_state(state, os.path.dirname(path))
        barrier(runtime)
    message = (f'Stopped by {stop.name} {where}: the run is saved in {path}; continue it with: {resume_command()}')
    logger.logger.info(message)
    if runtime.is_primary:
        print(message, file=sys.stderr, flush=True)
    return exit_code(stop.signum)


COMPUTE_COLUMNS = ('images_per_s', 'flop_per_image', 'flops_per_s', 'mfu')  # appended to stats_adv.csv


def start_meter(trainer, runtime, logger, loader, amp, state=None):
    """The compute accounting: FLOPs per training image counted once on `loader`'s first images (every random
    stream put back) and the device's peak."""
    rng = rng_state(runtime.device)   # a DataLoader iterator draws its workers' base seed
    x, y = next(iter(loader))
    set_rng_state(rng, runtime.device)
    flops = flop_per_image(trainer, x[:8], y[:8])
    peak, label = device_peak(runtime.device, amp)
    logger.log('Compute-\t{:.4g} FLOP per training image (torch.utils.flop_counter); peak {:.3g} FLOP/s per device '
               '({}).'.format(flops, peak, label))
    done = (0.0, 0) if state is None else state.get('compute', (0.0, 0))   # (seconds, images) before a resume
    return Meter(flops, peak, runtime.world_size, *done)


def account(meter, trainer, epoch, num_epochs, logger, epoch_metrics):
    """The epoch's compute figures: a log line, and COMPUTE_COLUMNS at the end of the CSV row."""
    m = meter.epoch(trainer.last_epoch_images, trainer.last_epoch_seconds, epoch, num_epochs)
    logger.log(format_line(m))
    epoch_metrics.update((k, m[k]) for k in COMPUTE_COLUMNS)
    return m


def write_csv(rows, path):
    """stats_adv.csv of the per-epoch dicts (the reference used the removed DataFrame.append, differences item 1)."""
    text = pd.DataFrame(rows).to_csv(index=False)
    write_atomic(path, lambda f: f.write(text.encode()))


def run_state(trainer, runtime, **fields):
    """`fields`, the trainer, its global step and every process's RNG states (a collective; the original's resume
    restored no RNG state: docs/differences.md items 34 and 45)."""
    rngs = all_gather_object(rng_state(runtime.device), runtime)
    return dict(fields, global_step=trainer.last_global_step, trainer=trainer.state_dict(), rng=rngs)


def restore_state(trainer, state, runtime):
    """The inverse of `run_state`: the trainer (with weight averaging's BN momentum) and this process's RNGs."""
    trainer.load_state_dict(state['trainer'], global_step=state['global_step'])
    rngs = state['rng']  # one per process; a state of another number of processes: rank 0's for every process
    set_rng_state(rngs[runtime.rank] if len(rngs) == runtime.world_size else rngs[0], runtime.device)


def resume_epoch(trainer, state, args, runtime, logger, num_epochs):
    """`restore_state`, logged; a changed --lr (--resume-changed-flags lr) scales the schedule by new / old."""
    restore_state(trainer, state, runtime)
    partial = state.get('partial')
    logger.log('\nResuming from epoch {} of {}{}.'.format(state['epoch'] + 1, num_epochs,
                                                        f' at batch {partial["batch"] + 1}' if partial else ''))
    old_lr = state['args']['lr']
    if old_lr != args.lr:
        trainer.rescale_lr(args.lr / old_lr)
        logger.log('--lr changed from {} to {} (--resume-changed-flags lr): the schedule continues at the '
                   'same step, scaled by {}.'.format(old_lr, args.lr, args.lr / old_lr))
    return state['epoch'] + 1


def start_run(trainer, state, args, runtime, logger, test_dataloader, num_epochs, heading):
    """(first epoch, best, CSV rows, last train metrics): of the saved `state` (--resume), else (1, ...) after the
    opening lines (the clean test accuracy before training, `heading`)."""
    if state is not None:
        start_epoch = resume_epoch(trainer, state, args, runtime, logger, num_epochs)
        return start_epoch, list(state['best']), state['rows'], state['train_metrics']
    if args.resume:
        logger.log('\nNo epoch of this run was saved: starting it from epoch 1.')
    logger.log('\n\n')
    test_acc = trainer.eval(test_dataloader)
    logger.log('Standard Accuracy-\tTest: {:2f}%.'.format(test_acc * 100))  # sic: {:2f} (docs/differences.md item 30)
    logger.log(heading.format(num_epochs))
    return 1, [0.0, 0.0], [], None


def train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch, args, log_dir, on_step=None,
                resume=None):
    """Train `epoch`, test the clean accuracy, log the first lines: (train metrics, test accuracy, the CSV row)."""
    logger.log('======= Epoch {} ======='.format(epoch))
    last_lr = trainer.last_lr()
    res = train_or_stop(trainer, train_dataloader, epoch, lambda e: non_finite_message(e, log_dir, logger, args.lr),
                        on_step, resume)
    test_acc = trainer.eval(test_dataloader)

    # the LR is the one read before the epoch (docs/differences.md item 39)
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


def _nbytes(obj):
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(map(_nbytes, obj.values()))
    return sum(map(_nbytes, obj)) if isinstance(obj, (list, tuple)) else 0


def check_space(trainer, runtime, folder, fresh=False):
    """One line before a save `folder` cannot hold (at the start, not after an epoch; before each: no half save)."""
    if not runtime.is_primary:
        return
    need = _nbytes(trainer.state_dict()) + (2 * _nbytes(trainer.weights()) if fresh else 0)
    if not trainer.optimizer.state:   # SGD's momentum buffers appear at the first step
        need += sum(_nbytes(p) for p in trainer.model.parameters())
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UserError(f'{folder} has {free / 2 ** 20:.1f} MiB free, but saving this run needs about '
                        f'{need / 2 ** 20:.1f} MiB: free some space or give another folder (the files saved so far '
                        'are intact; a started run continues with --resume).')


def save_epoch(trainer, runtime, logger, log_dir, new_best, rows, state, start, args_to_write=None):
    """weights-best.pt (if `new_best`), weights-last.pt, stats_adv.csv, curves.png, args.txt (if `args_to_write`)
    and, last, the state file: the epoch's commit point (docs/differences.md item 45)."""
    state = run_state(trainer, runtime, **state)
    check_space(trainer, runtime, log_dir)
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
        save_state(state, log_dir)
    barrier(runtime)


def final_record(trainer, logger, train_dataloader, res, best, label, meter=None):
    """The closing lines, `label` the best robust accuracy's split; the clean Test figure is the best epoch's
    (docs/differences.md item 31)."""
    train_acc = res['clean_acc'] if 'clean_acc' in res else trainer.evaluate(train_dataloader, sharded=True)[0]
    if meter is not None:
        logger.log('Compute-\t{:.2f} device-hours of training in all, {:.3g} FLOP.'.format(
            meter.seconds * meter.world_size / 3600, meter.images * meter.flop_per_image))
    logger.log('\nTraining completed.')
    logger.log('Standard Accuracy-\tTrain: {:.2f}%.\tTest: {:.2f}%.'.format(train_acc * 100, best[0] * 100))
    logger.log('Adversarial Accuracy-\tTrain: {:.2f}%.\t{}: {:.2f}%.'.format(res['adversarial_acc'] * 100, label,
                                                                           best[1] * 100))
    logger.log('Script Completed.')
    logger.close()


def run_epochs(trainer, runtime, logger, args, log_dir, loaders, state, num_epochs, stop, measure, label,
               heading, board=None, data=None):
    """The epochs of train-wa.py and train.py, from the start (or the resume) to the closing lines: train, then
    `measure(epoch, res, row) -> (model-selection score, extra state fields)`, the compute columns, the save (ties
    go to the later epoch); a signal or --stop-after ends it after a save. Returns the exit code (None: done)."""
    train_dataloader, test_dataloader = loaders
    args_changed = state is not None and saved_lr(log_dir) != args.lr  # args.txt goes with its first state file
    start_epoch, best, rows, res = start_run(trainer, state, args, runtime, logger, test_dataloader, num_epochs,
                                             heading)
    meter = start_meter(trainer, runtime, logger, test_dataloader, args.amp, state)
    partial = None if state is None else state.get('partial')   # a run stopped mid-epoch continues there
    state = state or {'format_version': STATE_FORMAT_VERSION, 'epoch': 0, 'best': best, 'rows': rows,
                      'train_metrics': None, 'compute': (0.0, 0), 'args': dict(vars(args)), 'data': data}
    trainer.stop, stop.immediate = stop, False   # from here a signal stops after the current step, then saves
    path = os.path.join(log_dir, STATE_FILE)
    for epoch in range(start_epoch, num_epochs + 1):
        start = time.time()
        try:
            res, test_acc, row = train_epoch(trainer, logger, train_dataloader, test_dataloader, epoch, args, log_dir,
                                             board.step if board else None, partial)
        except Interrupted as e:
            return save_stopped(trainer, runtime, logger, path, stop, state, e)
        partial = None
        score, extra = measure(epoch, res, row)
        account(meter, trainer, epoch, num_epochs, logger, row)  # the last columns of the row
        rows.append(row)
        if board is not None:
            board.epoch(epoch, row)
        new_best = score >= best[1]
        if new_best:
            best = [test_acc, score]
        state = dict(extra, format_version=STATE_FORMAT_VERSION, epoch=epoch, best=best, rows=rows,
                     train_metrics=res, compute=(meter.seconds, meter.images), args=dict(vars(args)), data=data)
        save_epoch(trainer, runtime, logger, log_dir, new_best, rows, state, start, args if args_changed else None)
        args_changed = False
        if stop.signum is not None and epoch < num_epochs:
            return save_stopped(trainer, runtime, logger, path, stop, state)
        if args.stop_after is not None and epoch >= args.stop_after and epoch < num_epochs:
            logger.log('Stopped after epoch {} (--stop-after).'.format(epoch))
            return 0
    final_record(trainer, logger, train_dataloader, res, best, label, meter)
    return None

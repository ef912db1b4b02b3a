"""The one trainer of every training script; `train_model`: the training forwards' (maybe DDP / compiled) model."""
import itertools
import sys
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from core.training.epoch_metrics import FP16_SKIP_TOLERANCE, NONFINITE_CHECK_EVERY, EpochMetrics, bar_redraws_next
from core.training.schedules import rescale_lr
from core.utils.checkpoint import load_state_dict, save_atomic
from core.utils.distributed import all_reduce_sum, broadcast_buffers
from core.utils.faults import fault_point
from core.utils.metrics import accuracy, num_correct


class Interrupted(Exception):
    """A signal stopped epoch `epoch` after `batch` steps; `partial` is what `train(resume=...)` continues from."""

    def __init__(self, epoch, batch, partial):
        super().__init__(f'epoch {epoch}, batch {batch}')
        self.epoch, self.batch, self.partial = epoch, batch, partial


def to_device(x, y, device, channels_last=False):
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


class AdversarialTrainer:
    """`ema` None: the reference's plain Trainer, else its WATrainer (evaluation, `model_state_dict`: averaged)."""

    def __init__(self, model, optimizer, scheduler, loss, eval_attack, runtime, *, per_batch_scheduler=False,
                 ema=None, train_model=None, prepare=None, prepare_train=None, clip_grad=None, steps_per_epoch=0):
        self.model, self.train_model = model, model if train_model is None else train_model
        self.optimizer, self.scheduler, self.per_batch_scheduler = optimizer, scheduler, per_batch_scheduler
        self.loss, self.eval_attack, self.ema = loss, eval_attack, ema
        self.runtime, self.device, self.scaler = runtime, runtime.device, runtime.grad_scaler()
        self.prepare = prepare if prepare is not None else lambda x, y: to_device(x, y, runtime.device)
        self.prepare_train = prepare_train if prepare_train is not None else self.prepare
        self.clip_grad, self.steps_per_epoch = clip_grad, steps_per_epoch
        self.eval_model = model if ema is None else ema.wa_model
        self.last_global_step = 0   # the global step after the last batch trained (saved with the run's state)
        self.stop = None            # a core.utils.preemption.StopRequest, polled between steps

    @property
    def wa_model(self):
        return self.ema.wa_model

    def train(self, dataloader, epoch=0, on_step=None, resume=None):
        """One epoch -> per-batch metric means (docs/differences.md items 7, 28); a signal raises Interrupted."""
        ema, n = self.ema, len(dataloader)
        self.train_model.train()
        metrics_acc = EpochMetrics(self.device, FP16_SKIP_TOLERANCE if self.scaler.is_enabled() else 0)
        check_every = 1 if self.device.type == 'cpu' else NONFINITE_CHECK_EVERY
        first, images, elapsed = 0, 0, 0.0
        if resume is not None:
            first, images, elapsed = resume['batch'], resume['images'], resume['seconds']
            metrics_acc.load_state_dict(resume['metrics'])
        bar = self.progress(itertools.islice(dataloader, first, None), epoch, n, first)
        start = time.time() - elapsed
        try:
            for i, (x, y) in enumerate(bar, start=first):
                images += len(x)                                # loader images (before CutMix copies)
                step = (epoch - 1) * self.steps_per_epoch + i   # optimiser steps taken before this batch
                if ema is not None:
                    ema.before_step(self.model, step)           # BN momentum 1.0, then 0.01 (differences.md 20)
                x, y = self.prepare_train(x, y)
                with self.runtime.autocast():
                    loss, metrics = self.loss(x, y)
                self.optimizer.zero_grad(set_to_none=False)
                self.scaler.scale(loss).backward()
                if self.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if on_step is not None:
                    on_step((epoch - 1) * n + i + 1, dict(metrics, lr=self.optimizer.param_groups[0]['lr']))
                if self.per_batch_scheduler:
                    self.scheduler.step()
                if ema is not None:
                    ema.update(self.model, step + 1)
                self.last_global_step = step + 1
                metrics_acc.add(metrics)
                fault_point('train-batch', i + 1)
                if (i + 1) % check_every == 0:
                    metrics_acc.check_finite(epoch, n, self.runtime)
                if i + 1 < n and self.stop_requested(i + 1):
                    metrics_acc.check_finite(epoch, n, self.runtime)
                    raise Interrupted(epoch, i + 1, {'batch': i + 1, 'images': images, 'metrics':
                                                     metrics_acc.state_dict(), 'seconds': time.time() - start})
                if bar_redraws_next(bar, i + 1):
                    bar.set_postfix({k: f'{v:.4f}' for k, v in metrics_acc.means().items()}, refresh=False)
        finally:
            bar.close()
        metrics_acc.check_finite(epoch, n, self.runtime)
        if not self.per_batch_scheduler:
            self.scheduler.step()
        broadcast_buffers(self.model, self.runtime)  # DDP: every process evaluates rank 0's BN statistics
        if ema is not None:
            ema.update_bn(self.model)  # BN statistics copied, not aliased (docs/differences.md item 8)
        means = metrics_acc.means()
        if self.runtime.distributed:
            sums = all_reduce_sum(list(means.values()), self.runtime)
            means = {k: s / self.runtime.world_size for k, s in zip(means, sums)}
        self.last_epoch_images = int(all_reduce_sum([images], self.runtime)[0])
        self.last_epoch_seconds = time.time() - start
        return means

    def stop_requested(self, batch):
        """Whether a signal asks to stop; under DDP a collective (every NONFINITE_CHECK_EVERY GPU batches)."""
        if self.stop is None:
            return False
        if not self.runtime.distributed:
            return self.stop.signum is not None
        if self.device.type != 'cpu' and batch % NONFINITE_CHECK_EVERY:
            return False
        return all_reduce_sum([self.stop.signum is not None], self.runtime)[0] > 0

    def progress(self, batches, epoch, total, initial=0):
        """A tqdm bar on the primary process; refreshed at most every 30 s when stderr is not a terminal."""
        return tqdm(batches, desc=f'Epoch {epoch}', total=total, initial=initial, disable=not self.runtime.is_primary,
                    leave=False, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0, file=sys.stderr)

    def last_lr(self):
        """LR of group 0 for the next batch (the value train-wa.py logs at the start of an epoch)."""
        return self.scheduler.get_last_lr()[0]

    def rescale_lr(self, ratio):
        rescale_lr(self.optimizer, self.scheduler, ratio)

    def evaluate(self, dataloader, adversarial=False, sharded=False):
        return evaluate(self.eval_model, dataloader, self.runtime, self.prepare,
                        (self.eval_attack if adversarial else None,), sharded)[0]

    def eval(self, dataloader, adversarial=False):
        """Mean of per-batch accuracies, the reference's `eval` (not correct / total; docs/differences.md item 7)."""
        return self.evaluate(dataloader, adversarial)[0]

    def weights(self):
        """The reference's checkpoint content (with weight averaging, `model_state_dict` holds the averaged weights)."""
        if self.ema is None:
            return {'model_state_dict': self.model.state_dict()}
        return {'model_state_dict': self.ema.state_dict(), 'unaveraged_model_state_dict': self.model.state_dict()}

    def save_model(self, path):
        save_atomic(self.weights(), path)

    def state_dict(self):
        state = {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                 'scheduler': self.scheduler.state_dict(), 'scaler': self.scaler.state_dict()}
        if self.ema is not None:
            state['wa_model'] = self.ema.state_dict()
        return state

    def load_state_dict(self, state, global_step=None):
        """`state_dict()` back; with `global_step`, also weight averaging's BatchNorm momentum at that step."""
        load_state_dict(self.model, state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        if state['scheduler'] is not None:
            self.scheduler.load_state_dict(state['scheduler'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        if self.ema is not None:
            self.ema.load_state_dict(state['wa_model'])
            if global_step is not None:
                self.ema.restore_bn_momentum(self.model, global_step)


def evaluate(model, dataloader, runtime, prepare, attacks=(None,), sharded=False):
    """(mean of batch accuracies, correct / total) per attack (None: clean; docs/differences.md items 27 and 71)."""
    model.eval()
    rank, world = runtime.rank, runtime.world_size
    sharded = sharded or getattr(dataloader.batch_sampler, 'per_rank', False)  # load_data's eval loaders
    sums = [0.0, 0, 0] * len(attacks)   # per attack: sum of batch accuracies, correct, total
    n_batches = 0
    for i, (x, y) in enumerate(dataloader):
        if not sharded and i % world != rank:
            continue
        x, y = prepare(x, y)
        with runtime.autocast():
            inputs = [x if attack is None else attack(x, y) for attack in attacks]  # eval mode, frozen parameters
            with torch.no_grad():
                outs = [model(z) for z in inputs]
        for j, out in enumerate(outs):
            sums[3 * j] += accuracy(y, out)
            sums[3 * j + 1] += num_correct(y, out)
            sums[3 * j + 2] += len(y)
        n_batches += 1
    sums = all_reduce_sum(sums + [n_batches], runtime)
    n_batches = max(1, sums.pop())
    return [(sums[3 * j] / n_batches, sums[3 * j + 1] / max(1, sums[3 * j + 2])) for j in range(len(attacks))]

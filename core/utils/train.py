"""The plain adversarial trainer (`--tau 0`) and the learning-rate schedules.

`Trainer` holds the model, the optimizer and scheduler, the training and evaluation attacks, and runs one
epoch (`train`) or one evaluation (`eval`). `WATrainer` (gowal21uncovering/utils/watrain.py) adds weight
averaging on top of it and is what train-wa.py uses by default.

Where the model lives: `self.model` is the plain network (a ModelWrapper: state-dict keys `module.0.`/
`module.1.`); `self.train_model` is the module the training forwards go through: the same object, or a
DistributedDataParallel / torch.compile wrapper around it (`wrap`). Checkpoints and the optimizer's
parameter names always come from `self.model`.
"""
import math
import os
import sys
import time

import pandas as pd
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import MultiStepLR, OneCycleLR
from tqdm import tqdm

from core.attacks import create_train_and_eval_attacks
from core.errors import UserError
from core.metrics import accuracy, batch_accuracy, num_correct
from core.models import create_model
from core.objectives import OBJECTIVES, resolve, select
from core.utils.checkpoint import load_checkpoint, load_state_dict, save_atomic
from core.utils.context import ctx_noparamgrad_and_eval
from core.utils.distributed import Runtime, all_reduce_sum, broadcast_buffers, wrap_ddp
from core.utils.export import is_safetensors, read_safetensors
from core.utils.faults import fault_point
from core.utils.rst import CosineLR
from core.utils.trades import trades_loss_plain  # noqa: F401 (its former home)
from core.utils.utils import seed

__all__ = ['SCHEDULERS', 'EpochMetrics', 'NonFiniteLoss', 'Trainer', 'pretrained_path', 'trades_loss_plain',
           'update_steps']

SCHEDULERS = ('cyclic', 'step', 'cosine', 'cosinew')


def update_steps(data, batch_size):
    """The reference's steps per epoch: floor(N / batch_size) + 1, N = 50000 ('cifar' in data), 100000
    ('tiny-imagenet' in data), else 73257. Kept as the reference computes it, although it is not the real number
    of batches (N is hard-coded, and a batch size dividing N still adds 1): the cyclic schedule's length and the
    weight-averaging step count depend on it."""
    num_samples = 50000 if 'cifar' in data else 73257
    num_samples = 100000 if 'tiny-imagenet' in data else num_samples
    return int(math.floor(num_samples / batch_size) + 1)


def pretrained_path(args):
    """`--pretrained-file`: a run name under --log-dir (its weights-best.pt, as the reference), a .pt file or a
    .safetensors export (scripts/export.py)."""
    name = args.pretrained_file
    if os.path.isfile(name):
        return name
    return os.path.join(args.log_dir, name, 'weights-best.pt')


class Trainer:
    """Adversarial training without weight averaging (the reference's `core/utils/train.py: Trainer`).

    Construction: seed, build the model, the criterion (mean cross-entropy), the optimizer
    and scheduler (`init_optimizer`), load `--pretrained-file` if given, build the attacks.

    Args:
        info: dataset info of `core.data.get_data_info` (keys data, num_classes, mean, std).
        args: the parsed train-wa.py flags.
        runtime: device / AMP / DDP decisions (`core.utils.distributed.setup`). Default: CPU, float32.
    """

    def __init__(self, info, args, runtime=None):
        seed(args.seed)
        self.params = args
        self.info = info
        self.runtime = runtime if runtime is not None else Runtime(device=torch.device('cpu'))
        self.device = self.runtime.device
        self.num_classes = info['num_classes']
        self.model = create_model(args.model, args.normalize, info, self.device)
        if getattr(args, 'channels_last', False):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model = self.model
        self.criterion = nn.CrossEntropyLoss()
        self.scheduler = None
        self.init_optimizer(self.params.num_adv_epochs)
        if self.params.pretrained_file is not None:
            self.load_pretrained(pretrained_path(self.params))
        self.attack, self.eval_attack = create_train_and_eval_attacks(
            self.model, self.criterion, args.attack, args.attack_eps, args.attack_iter, args.attack_step)
        self.scaler = self.runtime.grad_scaler()
        self.last_global_step = 0
        # steps per epoch in the global step count: 0 here, so the plain trainer's global step is the batch index
        # within the epoch; WATrainer sets the reference's `update_steps` (its EMA warm-up reads the count)
        self.update_steps = 0
        # the dispatch only: the flag rules were checked at start-up (`check_flags`), and train.py trains with the
        # flags it ignores (--LSE, --CutMix) still set
        self.objective = OBJECTIVES[select(args, self.WEIGHT_AVERAGING)]

    # ------------------------------------------------------------------ optimizer and schedule
    def param_groups(self):
        """One group, weight decay on every parameter (the plain Trainer)."""
        return [{'params': list(self.model.parameters())}]

    def init_optimizer(self, num_epochs):
        """SGD(lr, momentum 0.9, nesterov, coupled weight decay) and, if num_epochs > 0, the scheduler."""
        self.optimizer = torch.optim.SGD(self.param_groups(), lr=self.params.lr,
                                         weight_decay=self.params.weight_decay, momentum=0.9,
                                         nesterov=self.params.nesterov)
        if num_epochs <= 0:
            return
        self.init_scheduler(num_epochs)

    def init_scheduler(self, num_epochs):
        """The `--scheduler`: cyclic (OneCycleLR, per batch), step (x0.1 at epochs 100 and 105), cosine, cosinew
        (OneCycleLR over epochs, 2.5% warm-up); OneCycleLR keeps its default momentum cycling 0.95 -> 0.85 -> 0.95."""
        p = self.params
        if p.scheduler == 'cyclic':
            steps = update_steps(p.data, p.batch_size)
            self.scheduler = OneCycleLR(self.optimizer, max_lr=p.lr, pct_start=0.25, steps_per_epoch=steps,
                                        epochs=int(num_epochs))
        elif p.scheduler == 'step':
            self.scheduler = MultiStepLR(self.optimizer, gamma=0.1, milestones=[100, 105])
        elif p.scheduler == 'cosine':
            self.scheduler = CosineLR(self.optimizer, max_lr=p.lr, epochs=int(num_epochs))
        elif p.scheduler == 'cosinew':
            try:
                self.scheduler = OneCycleLR(self.optimizer, max_lr=p.lr, pct_start=0.025, total_steps=int(num_epochs))
            except ZeroDivisionError:  # 0.025 * E - 1 == 0: OneCycleLR's warm-up phase has length 0 (E = 40)
                raise UserError(f'--scheduler cosinew cannot run {num_epochs} epochs: torch OneCycleLR divides by '
                                f'zero when 0.025 * epochs = 1; use another --num-adv-epochs (e.g. 41).') from None
        else:
            self.scheduler = None

    def rescale_lr(self, ratio):
        """Multiply every learning rate of the optimizer and the schedule by `ratio` (a resume with another --lr).

        All four schedules are proportional to --lr (OneCycleLR's initial and final rates are max_lr / 25 and
        that / 1e4, the cosine and step schedules scale max_lr), so from the current step on the schedule is the
        one a run with lr * ratio has at that step.
        """
        for group in self.optimizer.param_groups:
            for key in ('lr', 'initial_lr', 'max_lr', 'min_lr'):
                if key in group:
                    group[key] *= ratio
        s = self.scheduler
        if s is not None:
            s.base_lrs = [v * ratio for v in s.base_lrs]
            s._last_lr = [v * ratio for v in s._last_lr]
            if isinstance(getattr(s, 'max_lr', None), float):  # CosineLR
                s.max_lr *= ratio

    def last_lr(self):
        """LR of group 0 for the next batch (the value train-wa.py logs at the start of an epoch)."""
        if self.scheduler is None:
            return self.optimizer.param_groups[0]['lr']
        return self.scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------ wrapping (DDP, SyncBN, compile)
    def wrap(self, sync_bn=False, compile=False):
        """Set `self.train_model`: SyncBatchNorm (in place), DDP and torch.compile as asked. Call before the
        second `init_optimizer` (SyncBatchNorm modules replace the BatchNorm ones but keep their parameters).
        The training attacks always run on the plain module (`unwrap`): eager input gradients only, no buffer
        broadcast, no compiled graph variants for grad mode / requires_grad / batch statistics."""
        if sync_bn and self.runtime.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        model = wrap_ddp(self.model, self.runtime)
        if compile:  # only the training forwards: the attacks run on the eager self.model (`unwrap`)
            model = torch.compile(model)
            model.register_forward_pre_hook(_dynamic_batch)
        self.train_model = model

    # ------------------------------------------------------------------ losses
    WEIGHT_AVERAGING = False  # which trainer this is, for the objectives registry (core/objectives.py)

    @classmethod
    def check_flags(cls, args):
        """A UserError if the flags ask for an objective this trainer cannot train (`core.objectives.resolve`):
        the plain Trainer trains Madry, plain TRADES (linf-pgd or l2-pgd) or MART (linf-pgd); LSE and CutMix need
        weight averaging."""
        resolve(args, cls.WEIGHT_AVERAGING)

    def loss(self, x, y):
        """The batch loss of the objective resolved at construction (MART > TRADES > Madry here)."""
        return self.objective.loss(self, x, y)

    def adversarial_loss(self, x, y):
        """Madry PGD-AT: attack in eval mode, then mean CE on x_adv (and x with --keep-clean)."""
        with ctx_noparamgrad_and_eval(self.model):
            x_adv, _ = self.attack.perturb(x, y)
        if self.params.keep_clean:
            x_adv, y_adv = torch.cat((x, x_adv), dim=0), torch.cat((y, y), dim=0)
        else:
            y_adv = y
        out = self.train_model(x_adv)
        loss = self.criterion(out, y_adv)
        preds = out.detach()
        metrics = {'loss': loss.detach()}
        if self.params.keep_clean:
            metrics['clean_acc'] = batch_accuracy(y, preds[:len(x)])
            metrics['adversarial_acc'] = batch_accuracy(y, preds[len(x):])
        else:
            metrics['adversarial_acc'] = batch_accuracy(y, preds)
        return loss, metrics

    def standard_loss(self, x, y):
        """Mean CE on clean images (not used by train-wa.py)."""
        out = self.train_model(x)
        loss = self.criterion(out, y)
        return loss, {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, out.detach())}

    # ------------------------------------------------------------------ one epoch
    def prepare_batch(self, x, y, train=False):
        """Move a CPU batch to the device (and to channels_last if asked); `train` marks training batches."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if getattr(self.params, 'channels_last', False):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def global_step(self, epoch, update_iter):
        """Optimizer steps taken after `update_iter` steps of epoch `epoch` (WATrainer: the reference's formula)."""
        return (epoch - 1) * self.update_steps + update_iter

    def before_step(self, epoch, update_iter):
        """Hook run before each batch (WATrainer: the BatchNorm momentum trick)."""

    def after_step(self, epoch, update_iter):
        """Hook run after each optimizer step (WATrainer: the weight-averaging update)."""

    def end_epoch(self):
        """Hook run after the epoch's scheduler step (WATrainer: copy BN statistics into the averaged model)."""

    def restore_bn_momentum(self, global_step):
        """After a resume, the BatchNorm momentum the training had reached (WATrainer's trick; nothing here)."""

    def progress(self, dataloader, epoch):
        """A tqdm bar on the primary process; refreshed at most every 30 s when stderr is not a terminal."""
        return tqdm(dataloader, desc=f'Epoch {epoch}', disable=not self.runtime.is_primary, leave=False,
                    dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0, file=sys.stderr)

    def train(self, dataloader, epoch=0, adversarial=True, on_step=None):
        """Train one epoch; returns the unweighted mean over batches of each batch metric (as the reference logs).

        `on_step(step, metrics)`, if given (train-wa.py --tensorboard), is called after every optimizer step with
        step = (epoch - 1) * len(dataloader) + batch (1-based) and the batch's metrics plus the `lr` it used.

        Per batch: loss (under autocast), zero the gradients, backward (scaled with fp16), optional global
        norm clipping, optimizer step, and the per-batch scheduler step of `cyclic`. After the epoch: the
        per-epoch scheduler step of `step`, `cosine`, `cosinew`. Under DDP the means are also averaged over
        the processes.

        The batch metrics stay on the device (`EpochMetrics`): the host reads them only when the progress bar
        redraws and at the end of the epoch. A loss that is not finite raises `NonFiniteLoss` naming the epoch
        and the first such batch, before the epoch ends (so before anything of it is saved); it is noticed at
        the next check (every batch on the CPU, every `NONFINITE_CHECK_EVERY` batches on a GPU). With fp16,
        a step the GradScaler skips is not an error: only `FP16_SKIP_TOLERANCE` non-finite losses in a row are.
        """
        p = self.params
        self.train_model.train()
        tolerance = FP16_SKIP_TOLERANCE if self.scaler.is_enabled() else 0
        check_every = 1 if self.device.type == 'cpu' else NONFINITE_CHECK_EVERY
        metrics_acc = EpochMetrics(self.device, tolerance)
        bar = self.progress(dataloader, epoch)
        try:
            for update_iter, (x, y) in enumerate(bar):
                self.before_step(epoch, update_iter)
                x, y = self.prepare_batch(x, y, train=True)
                with self.runtime.autocast():
                    loss, metrics = self.loss(x, y) if adversarial else self.standard_loss(x, y)
                self.optimizer.zero_grad(set_to_none=False)
                self.scaler.scale(loss).backward()
                if p.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), p.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if on_step is not None:
                    on_step((epoch - 1) * len(dataloader) + update_iter + 1,
                            dict(metrics, lr=self.optimizer.param_groups[0]['lr']))
                if p.scheduler in ('cyclic',):
                    self.scheduler.step()
                self.after_step(epoch, update_iter + 1)
                self.last_global_step = self.global_step(epoch, update_iter + 1)
                metrics_acc.add(metrics)
                fault_point('train-batch', update_iter + 1)
                if (update_iter + 1) % check_every == 0:
                    metrics_acc.check_finite(epoch, len(dataloader), self.runtime)
                if _bar_redraws_next(bar, update_iter + 1):
                    bar.set_postfix({k: f'{v:.4f}' for k, v in metrics_acc.means().items()}, refresh=False)
        finally:
            bar.close()
        metrics_acc.check_finite(epoch, len(dataloader), self.runtime)
        if p.scheduler in ('step', 'converge', 'cosine', 'cosinew') and self.scheduler is not None:
            self.scheduler.step()
        broadcast_buffers(self.model, self.runtime)  # DDP: every process evaluates rank 0's BN statistics
        self.end_epoch()
        means = metrics_acc.means()
        if self.runtime.distributed:
            keys = list(means)
            sums = all_reduce_sum([means[k] for k in keys], self.runtime)
            means = {k: s / self.runtime.world_size for k, s in zip(keys, sums)}
        return means

    # ------------------------------------------------------------------ evaluation
    def eval_model(self):
        """The model evaluated: the trained model here, the averaged model in WATrainer."""
        return self.model

    def evaluate(self, dataloader, adversarial=False, sharded=False):
        """Accuracy of `eval_model()` in eval mode on `dataloader`, clean or under `self.eval_attack`.

        Returns (mean of per-batch accuracies, the reference's logged figure;
                 correct / total, the exact accuracy).
        Under DDP the batches are split round-robin over the processes and the sums reduced, so both figures
        equal the single-process ones (up to the attack's random start); `sharded=True` says the loader already
        yields this process's share (the training loader; `load_data`'s evaluation loaders say so themselves).
        """
        model = self.eval_model()
        model.eval()
        rank, world = self.runtime.rank, self.runtime.world_size
        sharded = sharded or getattr(dataloader.batch_sampler, 'per_rank', False)  # load_data's eval loaders
        acc_sum, n_batches, correct, total = 0.0, 0, 0, 0
        for i, (x, y) in enumerate(dataloader):
            if not sharded and i % world != rank:
                continue
            x, y = self.prepare_batch(x, y)
            with self.runtime.autocast():
                if adversarial:
                    with ctx_noparamgrad_and_eval(model):
                        x_adv, _ = self.eval_attack.perturb(x, y)
                    x = x_adv
                with torch.no_grad():
                    out = model(x)
            acc_sum += accuracy(y, out)
            correct += num_correct(y, out)
            total += len(y)
            n_batches += 1
        acc_sum, n_batches, correct, total = all_reduce_sum([acc_sum, n_batches, correct, total], self.runtime)
        return acc_sum / max(1, n_batches), correct / max(1, total)

    def eval(self, dataloader, adversarial=False):
        """Mean of per-batch accuracies, the reference's `eval` (not correct / total)."""
        return self.evaluate(dataloader, adversarial)[0]

    # ------------------------------------------------------------------ checkpoints
    def weights(self):
        """The reference's checkpoint content for this trainer: {'model_state_dict': weights}."""
        return {'model_state_dict': self.model.state_dict()}

    def save_model(self, path):
        save_atomic(self.weights(), path)

    def load_pretrained(self, path):
        """Load `model_state_dict` of a checkpoint into the model (strict, any `module.` prefix)."""
        if not os.path.isfile(path):
            raise UserError(f'--pretrained-file: {path} does not exist; give a run name under --log-dir '
                            f'(its weights-best.pt is read) or a checkpoint file.')
        if is_safetensors(path):  # an export of scripts/export.py
            load_state_dict(self.model, read_safetensors(path), source=path)
            return
        checkpoint = load_checkpoint(path)
        if 'model_state_dict' not in checkpoint:
            raise UserError(f'--pretrained-file: {path} has no model_state_dict; give a weights-*.pt of a run.')
        load_state_dict(self.model, checkpoint['model_state_dict'])

    def state_dict(self):
        """Everything of the trainer a resume needs (tensors, numbers and strings only)."""
        state = {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                 'scheduler': None if self.scheduler is None else self.scheduler.state_dict(),
                 'scaler': self.scaler.state_dict()}
        return state

    def load_state_dict(self, state):
        load_state_dict(self.model, state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        if self.scheduler is not None and state['scheduler'] is not None:
            self.scheduler.load_state_dict(state['scheduler'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])


def _dynamic_batch(module, args):
    """Forward pre-hook of the compiled training model: its graph is traced with a symbolic batch size, so the
    last, smaller batch of an epoch does not trigger a recompile."""
    torch._dynamo.maybe_mark_dynamic(args[0], 0)


class NonFiniteLoss(UserError):
    """The training loss was not finite (NaN or inf): raised by `Trainer.train` before the epoch ends.

    Attributes: epoch, batch (1-based index of the first non-finite batch of the epoch; 0 if it was seen on
    another DDP process only), num_batches, value (the loss there, a float).
    """

    def __init__(self, epoch, batch, num_batches, value):
        self.epoch, self.batch, self.num_batches, self.value = epoch, batch, num_batches, value
        where = f'batch {batch} of {num_batches}' if batch else 'a batch of another process'
        super().__init__(f'epoch {epoch}, {where}: the training loss is {value} (not finite)')


# Checks of the device-side non-finite flag: every batch on the CPU (reading a CPU tensor costs nothing), every
# NONFINITE_CHECK_EVERY batches elsewhere (one host synchronisation each). fp16: a non-finite loss is a step the
# GradScaler skips (it then halves the scale); only this many in a row stop the run.
NONFINITE_CHECK_EVERY = 32
FP16_SKIP_TOLERANCE = 16


class EpochMetrics:
    """The batch metrics of one epoch, kept on the device; the host reads them only in `means` and `check_finite`.

    Each batch's dict of 0-dim tensors becomes one float64 row (float64 holds the float32 values exactly, as the
    reference's `.item()` does). `means` is the reference's epoch figure: a table of the batches (pandas), then
    its column means. The non-finite watch is sync-free too: a device counter of consecutive non-finite losses
    and the 1-based index and value of the batch where the counter first exceeded `tolerance`.
    """

    def __init__(self, device, tolerance=0):
        self.rows, self.keys, self.tolerance = [], None, tolerance
        self.streak = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)   # 0 = none yet
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, metrics):
        if self.keys is None:
            self.keys = list(metrics)
        row = [metrics[k].detach().to(torch.float64) if torch.is_tensor(metrics[k])
               else torch.tensor(float(metrics[k]), dtype=torch.float64) for k in self.keys]
        self.rows.append(torch.stack([v.to(self.streak.device) for v in row]))
        loss = self.rows[-1][self.keys.index('loss')] if 'loss' in self.keys else self.rows[-1].sum()
        finite = torch.isfinite(loss)
        self.streak = torch.where(finite, torch.zeros_like(self.streak), self.streak + 1)
        hit = (self.first_bad == 0) & (self.streak > self.tolerance)
        self.first_bad = torch.where(hit, torch.full_like(self.first_bad, len(self.rows)), self.first_bad)
        self.bad_value = torch.where(hit, loss, self.bad_value)

    def check_finite(self, epoch, num_batches, runtime):
        """Raise NonFiniteLoss if a loss was not finite (under DDP: on any process; every process raises)."""
        first, value = int(self.first_bad), float(self.bad_value)
        if runtime.distributed:
            if all_reduce_sum([1.0 if first else 0.0], runtime)[0] == 0:
                return
        elif not first:
            return
        raise NonFiniteLoss(epoch, first, num_batches, value if first else float('nan'))

    def means(self):
        """{metric: mean over the batches so far} as Python floats (keys in first-seen order)."""
        if not self.rows:
            return {}
        values = torch.stack(self.rows).cpu().tolist()
        return {k: float(v) for k, v in pd.DataFrame(values, columns=self.keys).mean().items()}


def _bar_redraws_next(bar, n):
    """Whether tqdm will redraw `bar` when iteration `n` (1-based) ends: tqdm's own test (miniters, mininterval)."""
    if getattr(bar, 'disable', True):
        return False
    return n - bar.last_print_n >= bar.miniters and time.time() - bar.last_print_t >= bar.mininterval

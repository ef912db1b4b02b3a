"""The trainer of train-wa.py and train.py, built in the reference's seeding order (docs/differences.md item 41)."""
import copy
import functools
import os

import torch
import torch.nn as nn

from core.attacks import create_eval_attack, create_wa_eval_attack
from core.data.cutmix import cutmix_expand
from core.models import create_model
from core.training.objectives import bind, resolve
from core.training.schedules import PER_BATCH_SCHEDULERS, build_optimizer, build_scheduler, update_steps
from core.training.trainer import AdversarialTrainer, to_device
from core.training.weight_averaging import EMA, warmup_steps
from core.utils.checkpoint import load_state_dict, load_weights
from core.utils.distributed import Runtime, wrap_ddp
from core.utils.utils import seed


def build_trainer(info, args, runtime=None, weight_averaging=None, objective=None):
    """The trainer the flags ask for (`trainer_parts`), with weight averaging if --tau > 0 (or `weight_averaging`)."""
    return AdversarialTrainer(**trainer_parts(info, args, runtime, weight_averaging, objective))


def trainer_parts(info, args, runtime=None, weight_averaging=None, objective=None):
    """The keyword arguments of `AdversarialTrainer` (runtime default: CPU, float32; objective default: `resolve`)."""
    runtime = runtime if runtime is not None else Runtime(device=torch.device('cpu'))
    weight_averaging = bool(args.tau) if weight_averaging is None else weight_averaging
    objective = resolve(args, weight_averaging) if objective is None else objective
    channels_last = getattr(args, 'channels_last', False)
    steps_per_epoch = update_steps(args.data, args.batch_size)
    seed(args.seed)
    model = create_model(args.model, args.normalize, info, runtime.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.pretrained_file is not None:
        path = pretrained_path(args)
        load_state_dict(model, load_weights(path), source=path)
    ema = None
    if weight_averaging:  # the deep copy after the load: both networks start from the file (differences.md item 17)
        seed(args.seed)
        ema = EMA(copy.deepcopy(model), tau=args.tau, warmup_steps=warmup_steps(args.num_adv_epochs, steps_per_epoch))
    model, train_model = wrap_model(model, runtime, sync_bn=args.sync_bn, compile=args.compile)
    if runtime.distributed:  # same initial weights everywhere; then each process draws its own attack noise
        seed(args.seed + runtime.rank)
    optimizer = build_optimizer(model, args, weight_averaging)
    scheduler = build_scheduler(optimizer, args, args.num_adv_epochs)

    # the training attack runs on the plain module, not through DDP / torch.compile (docs/differences.md item 48)
    train_attack = objective.make_attack(model, args, info['num_classes'])
    attack_flags = (args.attack, args.attack_eps, args.attack_step, args.attack_iter)
    eval_attack = (create_eval_attack(model, nn.CrossEntropyLoss(), *attack_flags) if ema is None
                   else create_wa_eval_attack(ema.wa_model, *attack_flags))

    prepare = functools.partial(to_device, device=runtime.device, channels_last=channels_last)
    prepare_train = prepare
    if objective.allows_cutmix and args.CutMix:  # CutMix on the CPU batch, then to the device
        def prepare_train(x, y):
            return prepare(*cutmix_expand(x, y, info['num_classes'], copies=4))
    return dict(model=model, optimizer=optimizer, scheduler=scheduler,
                loss=bind(objective.loss, train_model, args, info['num_classes'], train_attack),
                eval_attack=eval_attack, runtime=runtime, per_batch_scheduler=args.scheduler in PER_BATCH_SCHEDULERS,
                ema=ema, train_model=train_model, prepare=prepare, prepare_train=prepare_train,
                clip_grad=args.clip_grad, steps_per_epoch=steps_per_epoch)


def wrap_model(model, runtime, sync_bn=False, compile=False):
    if sync_bn and runtime.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = wrap_ddp(model, runtime)
    if compile:
        train_model = torch.compile(train_model)
        # a symbolic batch size, so an epoch's last, smaller batch does not recompile
        train_model.register_forward_pre_hook(lambda module, args: torch._dynamo.maybe_mark_dynamic(args[0], 0))
    return model, train_model


def pretrained_path(args):
    """`--pretrained-file`: a weights file, else a run name under --log-dir (its weights-best.pt, as the reference)."""
    name = args.pretrained_file
    return name if os.path.isfile(name) else os.path.join(args.log_dir, name, 'weights-best.pt')


class Trainer(AdversarialTrainer):
    """`build_trainer(info, args, runtime, weight_averaging=False)` under the reference's name."""

    WEIGHT_AVERAGING = False

    def __init__(self, info, args, runtime=None):
        super().__init__(**trainer_parts(info, args, runtime, weight_averaging=self.WEIGHT_AVERAGING))


class WATrainer(Trainer):
    """`build_trainer(info, args, runtime, weight_averaging=True)` under the reference's name."""

    WEIGHT_AVERAGING = True

"""The training objectives, one registry: which loss a run trains and the flag rules each one has.

`resolve(args, weight_averaging)` picks the objective once, at start-up, from the flags as the reference's
trainers dispatch (MART if --mart, else SCORE-LSE if --LSE, else TRADES if --beta, else Madry; without weight
averaging, --tau 0, TRADES is the plain trainer's variant and SCORE-LSE does not exist) and raises a UserError for
a combination the objective does not support. `bind` fixes the run's model, flags and attack once; the trainer
(core/trainer.py) then calls the bound `loss(x, y)` per batch.

| name         | inner maximisation -> outer loss (composite)                  | --tau  | CutMix | --attack         |
|--------------|---------------------------------------------------------------|--------|--------|------------------|
| madry        | the train attack -> mean CE (`madry_loss`)                    | any    | no     | any              |
| trades-plain | `TradesPlainInnerMax` -> CE + beta KL (`trades_loss_plain`)   | 0      | no     | linf-pgd, l2-pgd |
| trades-kl    | `TradesInnerMax` (KL) -> `trades_kl_loss` (`trades_loss`)     | > 0    | yes    | linf-pgd, l2-pgd |
| score-lse    | `TradesInnerMax` (LSE) -> `score_lse_loss` (`trades_loss_LSE`) | > 0    | yes    | linf-pgd, l2-pgd |
| mart         | `MartInnerMax` -> `mart_outer_loss` (`mart_loss`)             | any    | no     | linf-pgd         |

without_DDPM/train_cifar.py's objectives are entries of the same registry (`script` says which script trains an
entry; `WITHOUT_DDPM_OBJECTIVES` is their view, the block at the end of this file), keyed by their --attack value
and picked once by `resolve_without_ddpm(args)`. Each loss is the batch mean of the term below, with the
--divergence D of core/divergences.py, targets t smoothed by --label_smoothing and the bound b of --clip_loss:

| --attack | training attack (`make_attack`) | loss of the batch (`loss`)                                     | --norm |
|----------|---------------------------------|----------------------------------------------------------------|--------|
| PGD      | `DivergencePGD` (train mode)    | relu(D(p(x_adv), t) - b), `pgd_loss`                           | any    |
| TRADES   | `TradesDivergencePGD` (eval)    | relu(D(p(x), t) + lambda D(p(x_adv), p(x)) - b), `trades_loss` | linf   |
| Standard | none, x_adv = x                 | relu(D(p(x), t) - b), `pgd_loss`                               | any    |

(TRADES with --not_clip_clean: D(p(x), t) + lambda relu(D(p(x_adv), p(x)) - b).)
"""
import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from core import divergences
from core.attacks.divergence import DivergencePGD, TradesDivergencePGD
from core.errors import UserError
from core.metrics import batch_accuracy
from core.utils.mart import mart_loss
from core.utils.trades import trades_loss, trades_loss_LSE, trades_loss_plain

__all__ = ['Objective', 'OBJECTIVES', 'LossContext', 'bind', 'madry_loss', 'clean_loss', 'select', 'resolve',
           'check_beta', 'WITHOUT_DDPM_OBJECTIVES', 'resolve_without_ddpm']


@dataclass(frozen=True)
class Objective:
    """One training objective.

    Attributes:
        name: registry key. needs_beta: trains only with --beta. needs_weight_averaging: True = only with
        --tau > 0, False = only with --tau 0, None = either. allows_cutmix: takes CutMix's soft labels.
        attacks: the --attack values it supports (None = any). attack_error: the UserError message otherwise.
        loss: `loss(ctx, x, y) -> (loss, metrics)`, ctx a `LossContext` (`bind` fixes it once per run).
    """
    name: str
    needs_beta: bool
    needs_weight_averaging: Optional[bool]
    allows_cutmix: bool
    attacks: Optional[Tuple[str, ...]]
    attack_error: str
    loss: Callable
    # Fields of the without_DDPM objectives (block at the end of this file); the defaults are train-wa.py's.
    script: str = 'train-wa.py'  # the script that trains it
    norms: Optional[Tuple[str, ...]] = None  # the --norm values it supports (None = any); norm_error otherwise
    norm_error: str = ''
    make_attack: Optional[Callable] = None  # `make_attack(model, args, num_classes)` -> training attack or None


@dataclass(frozen=True)
class LossContext:
    """What an objective's loss reads besides the batch (`bind` builds it once per run).

    Attributes:
        model: the module the training forwards go through (the model, or its DDP / torch.compile wrapper).
        args: the parsed flags (attack_eps, attack_step, attack_iter, attack, beta, ls, clip_value, CutMix,
            keep_clean).
        num_classes: K.
        attack: Madry's inner maximisation (an attack of core/attacks on the plain model).
    """
    model: Any
    args: Any
    num_classes: int
    attack: Any


def bind(loss, model, args, num_classes, attack):
    """`loss(x, y) -> (loss, metrics)`: `loss(ctx, x, y)` (an objective's `loss`, or `clean_loss`) with the run's
    model, flags and attack."""
    return functools.partial(loss, LossContext(model, args, num_classes, attack))


def _attack_kwargs(p):
    return dict(step_size=p.attack_step, epsilon=p.attack_eps, perturb_steps=p.attack_iter, beta=p.beta,
                attack=p.attack)


def madry_loss(ctx, x, y):
    """Madry PGD-AT: x_adv = ctx.attack(x, y) (eval mode, frozen parameters), then mean CE on x_adv (and on x
    too with --keep-clean, the clean images first)."""
    x_adv, _ = ctx.attack.perturb(x, y)
    if ctx.args.keep_clean:
        x_adv, y_adv = torch.cat((x, x_adv), dim=0), torch.cat((y, y), dim=0)
    else:
        y_adv = y
    out = ctx.model(x_adv)
    loss = F.cross_entropy(out, y_adv)
    preds = out.detach()
    metrics = {'loss': loss.detach()}
    if ctx.args.keep_clean:
        metrics['clean_acc'] = batch_accuracy(y, preds[:len(x)])
        metrics['adversarial_acc'] = batch_accuracy(y, preds[len(x):])
    else:
        metrics['adversarial_acc'] = batch_accuracy(y, preds)
    return loss, metrics


def clean_loss(ctx, x, y):
    """Mean CE on the clean images (`train(adversarial=False)`; not used by the scripts)."""
    out = ctx.model(x)
    loss = F.cross_entropy(out, y)
    return loss, {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, out.detach())}


def _trades_plain(ctx, x, y):
    return trades_loss_plain(ctx.model, x, y, **_attack_kwargs(ctx.args))


def _trades_kl(ctx, x, y):
    p = ctx.args
    return trades_loss(ctx.model, x, y, label_smoothing=p.ls, use_cutmix=p.CutMix, **_attack_kwargs(p))


def _score_lse(ctx, x, y):
    p = ctx.args
    return trades_loss_LSE(ctx.model, x, y, label_smoothing=p.ls, clip_value=p.clip_value, use_cutmix=p.CutMix,
                           num_classes=ctx.num_classes, **_attack_kwargs(p))


def _mart(ctx, x, y):
    return mart_loss(ctx.model, x, y, **_attack_kwargs(ctx.args))


_TRADES_ATTACKS = ('linf-pgd', 'l2-pgd')
# The one registry of training objectives: train-wa.py's / train.py's here, without_DDPM's appended below.
OBJECTIVES = {o.name: o for o in (
    Objective('madry', False, None, False, None, '', madry_loss),
    Objective('trades-plain', True, False, False, _TRADES_ATTACKS,
              'TRADES training supports --attack linf-pgd or l2-pgd.', _trades_plain),
    Objective('trades-kl', True, True, True, _TRADES_ATTACKS,
              'TRADES / LSE training supports --attack linf-pgd or l2-pgd.', _trades_kl),
    Objective('score-lse', True, True, True, _TRADES_ATTACKS,
              'TRADES / LSE training supports --attack linf-pgd or l2-pgd.', _score_lse),
    Objective('mart', True, None, False, ('linf-pgd',), 'MART supports --attack linf-pgd only.', _mart),
)}


def select(args, weight_averaging):
    """The objective's name from the flags: MART > SCORE-LSE (weight averaging only) > TRADES > Madry."""
    if args.beta is None:
        return 'madry'
    if args.mart:
        return 'mart'
    if not weight_averaging:
        return 'trades-plain'
    return 'score-lse' if args.LSE else 'trades-kl'


def check_beta(args):
    """--LSE and --mart need --beta (without it the reference silently trains Madry PGD-AT)."""
    if (args.LSE or args.mart) and args.beta is None:
        flag = '--LSE' if args.LSE else '--mart'
        raise UserError(f'{flag} needs --beta (without it the reference silently trains Madry PGD-AT); '
                        f'e.g. {flag} --beta 4.0, or drop {flag}.')


def resolve(args, weight_averaging):
    """The Objective the flags train, or a UserError naming the unsupported combination (one per run, at start-up).

    Args:
        args: the parsed train-wa.py / train.py flags (beta, mart, LSE, CutMix, attack).
        weight_averaging: whether the run averages weights (--tau > 0, the WATrainer).
    """
    if not weight_averaging and (args.LSE or args.CutMix):
        raise UserError('--LSE and --CutMix need weight averaging (the reference WATrainer): use --tau > 0.')
    objective = OBJECTIVES[select(args, weight_averaging)]
    if args.CutMix and not objective.allows_cutmix:
        raise UserError('--CutMix needs soft labels, which only TRADES and --LSE take: add --beta, drop --mart.')
    if objective.attacks is not None and args.attack not in objective.attacks:
        raise UserError(objective.attack_error)
    return objective


# ---------------------------------------------------------------------------------------------------------------
# without_DDPM/train_cifar.py: PGD-AT, TRADES or standard training with a chosen divergence (CIFAR without
# generated data). Keyed by the --attack value (the script's argparse choices); `resolve_without_ddpm` picks one
# at start-up. Calling convention: the script builds `make_attack(model, args, num_classes)` once; per batch
# core.without_ddpm.train_loss attacks (x_adv = x clamped to [0, 1] without an attack), smooths the targets by
# --label_smoothing and calls `loss(model, x, x_adv, targets, args, bound)` -> the scalar loss, the model in train
# mode. They are entries of OBJECTIVES like train-wa.py's (their `script` says which script trains them);
# WITHOUT_DDPM_OBJECTIVES is the view of this script's entries, in --attack choice order.
# ---------------------------------------------------------------------------------------------------------------

WITHOUT_DDPM_SCRIPT = 'without_DDPM/train_cifar.py'


def _divergence_pgd(model, args, num_classes):
    return DivergencePGD(model, args.epsilon / 255., args.pgd_alpha / 255., args.attack_iters, args.restarts,
                         args.norm, args.divergence, num_classes)


def _trades_divergence_pgd(model, args, num_classes):
    return TradesDivergencePGD(model, args.epsilon / 255., args.pgd_alpha / 255., args.attack_iters, args.divergence)


def _no_attack(model, args, num_classes):
    return None


def _divergence_loss(model, x, x_adv, targets, args, bound):
    """PGD / Standard: pgd_loss on model(x_adv) (x_adv = x for Standard)."""
    return divergences.pgd_loss(model(x_adv), targets, args.divergence, bound)[0]


def _trades_divergence_loss(model, x, x_adv, targets, args, bound):
    """TRADES: trades_loss on model(x_adv), then model(x) (this order: both forwards update BatchNorm)."""
    logits_adv = model(x_adv)
    logits_clean = model(x)
    return divergences.trades_loss(logits_adv, logits_clean, targets, args.divergence, args.TRADESlambda, bound,
                                   clip_clean=not args.not_clip_clean)[0]


def _without_ddpm(name, loss, make_attack, norms=None, norm_error=''):
    """An entry of train_cifar.py; the train-wa.py rules are neutral (it has no --beta, --tau, --CutMix)."""
    return Objective(name, needs_beta=False, needs_weight_averaging=None, allows_cutmix=False, attacks=None,
                     attack_error='', loss=loss, script=WITHOUT_DDPM_SCRIPT, norms=norms, norm_error=norm_error,
                     make_attack=make_attack)


OBJECTIVES.update((o.name, o) for o in (
    _without_ddpm('PGD', _divergence_loss, _divergence_pgd),
    _without_ddpm('TRADES', _trades_divergence_loss, _trades_divergence_pgd, norms=('linf',),
                  norm_error='--attack TRADES has no L2 step (the original crashed): use --norm linf, '
                             'or --attack PGD.'),
    _without_ddpm('Standard', _divergence_loss, _no_attack),
))
WITHOUT_DDPM_OBJECTIVES = {n: o for n, o in OBJECTIVES.items() if o.script == WITHOUT_DDPM_SCRIPT}


def resolve_without_ddpm(args):
    """The without_DDPM Objective of --attack, or a UserError naming the unsupported combination (once, at start-up).

    Args:
        args: the parsed without_DDPM/train_cifar.py flags (attack, norm).
    """
    objective = WITHOUT_DDPM_OBJECTIVES[args.attack]
    if objective.norms is not None and args.norm not in objective.norms:
        raise UserError(objective.norm_error)
    return objective

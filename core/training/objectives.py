"""The training objectives, one registry: which loss a run trains and the flag rules each one has.

Each entry holds its rules (`needs_beta`, `needs_weight_averaging`, `allows_cutmix`, `attacks`, the last read
from its attack class), its inner maximisation (`make_attack`, built once per run by core/training/builder.py) and its
loss. `resolve(args, weight_averaging)` reads them once, at start-up: it picks the objective as the reference's
trainers dispatch (`select`: MART if --mart, else SCORE-LSE if --LSE, else TRADES if --beta, else Madry; without
weight averaging, --tau 0, TRADES is the plain trainer's variant and SCORE-LSE does not exist; docs/differences.md
item 37) and raises a UserError for a combination the objective does not support (docs/differences.md items 26
and 43). `bind` fixes the run's model, attack and flags (explicit keyword arguments beta=, ls=, clip_value=, ...)
once; the trainer (trainer.py) then calls the bound `loss(x, y)` per batch: attack -> forwards -> outer loss.

| name         | inner maximisation (attack object) -> outer loss (composite)          | --tau | CutMix | --attack   |
|--------------|-----------------------------------------------------------------------|-------|--------|------------|
| madry        | `create_attack` (PGD on mean CE) -> `madry_outer_loss` (`madry_composite`) | any | no  | any        |
| trades-plain | `TradesPlainInnerMax` -> `trades_plain_outer_loss` (`attack_first_composite`) | 0 | no | linf, l2 |
| trades-kl    | `TradesInnerMax` (KL) -> `trades_kl_loss` (`trades_composite`)        | > 0   | yes    | linf, l2   |
| score-lse    | `TradesInnerMax` (LSE) -> `score_lse_loss` (`trades_composite`)       | > 0   | yes    | linf, l2   |
| mart         | `MartInnerMax` -> `mart_outer_loss` (`attack_first_composite`)        | any   | no     | linf       |

without_DDPM/train_cifar.py's objectives are entries of the same registry (`script` says which script trains an
entry; `WITHOUT_DDPM_OBJECTIVES` is their view, the block at the end of this file), keyed by their --attack value
and picked once by `resolve_without_ddpm(args)`. Each loss is the batch mean of the term below, with the
--divergence D of core/losses/divergences.py, targets t smoothed by --label_smoothing and the bound b of --clip_loss:

| --attack | training attack (`make_attack`) | loss of the batch (`loss`)                                     | --norm |
|----------|---------------------------------|----------------------------------------------------------------|--------|
| PGD      | `DivergencePGD` (train mode)    | relu(D(p(x_adv), t) - b), `pgd_loss`                           | any    |
| TRADES   | `TradesDivergencePGD` (eval)    | relu(D(p(x), t) + lambda D(p(x_adv), p(x)) - b), `trades_loss` | linf   |
| Standard | none, x_adv = x                 | relu(D(p(x), t) - b), `pgd_loss`                               | any    |

(TRADES with --not_clip_clean: D(p(x), t) + lambda relu(D(p(x_adv), p(x)) - b).)
"""
import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Tuple

import torch.nn as nn

from core.attacks import create_attack
from core.attacks.divergence import DivergencePGD, TradesDivergencePGD
from core.attacks.trades import MartInnerMax, TradesInnerMax, TradesPlainInnerMax
from core.losses.divergences import clip_bound
from core.losses.outer import mart_outer_loss, score_lse_loss, trades_kl_loss, trades_plain_outer_loss
from core.training.composites import attack_first_composite, divergence_composite, madry_composite, trades_composite
from core.utils.errors import UserError

__all__ = ['Objective', 'OBJECTIVES', 'Loss', 'bind', 'select', 'resolve', 'check_beta', 'WITHOUT_DDPM_OBJECTIVES',
           'resolve_without_ddpm']


class Loss(NamedTuple):
    """A composite `composite(model, attack, x, y, **options)` and `options(args, num_classes)`, the keyword
    arguments it takes from the flags (read once, by `bind`)."""
    composite: Callable
    options: Callable


@dataclass(frozen=True)
class Objective:
    """One training objective.

    flag: the train-wa.py flag (argparse dest) that asks for it ('mart', 'LSE', 'beta' given a value; None: Madry).
    needs_weight_averaging: True = only --tau > 0, False = only --tau 0, None = either. attacks: the --attack values
    it supports (None = any; `label` names it in the UserError). make_attack(model, args, num_classes): its inner
    maximisation on the plain model, built once per run. loss: a `Loss`.
    """
    name: str
    flag: Optional[str]
    needs_beta: bool
    needs_weight_averaging: Optional[bool]
    allows_cutmix: bool
    attacks: Optional[Tuple[str, ...]]
    label: str
    make_attack: Optional[Callable]
    loss: Callable
    script: str = 'train-wa.py'  # the script that trains it; without_DDPM's entries are at the end of this file
    norms: Optional[Tuple[str, ...]] = None  # the --norm values it supports (None = any); norm_error otherwise
    norm_error: str = ''


def bind(loss, model, args, num_classes, attack):
    """`loss(x, y) -> (loss, metrics)`: the composite with the run's model (the forwards' module, maybe a DDP /
    compile wrapper), its attack and its flags as keyword arguments, fixed once."""
    return functools.partial(loss.composite, model, attack, **loss.options(args, num_classes))


# ---------------------------------------------------------------------------------------------------------------
# train-wa.py / train.py: the inner maximisations (built once per run) and the flags their composites take
# ---------------------------------------------------------------------------------------------------------------

def _attack_flags(args):
    return dict(attack=args.attack, eps=args.attack_eps, step=args.attack_step, iters=args.attack_iter)


def _madry_attack(model, args, num_classes):
    """PGD (or the --attack) on the mean CE, uniform random start (the reference's train attack, both trainers)."""
    return create_attack(model, nn.CrossEntropyLoss(), args.attack, eps=args.attack_eps, step=args.attack_step,
                         iters=args.attack_iter, rand_init_type='uniform')


def _trades_attack(divergence):
    def make(model, args, num_classes):
        return TradesInnerMax(model, divergence, **_attack_flags(args))
    return make


def _trades_plain_attack(model, args, num_classes):
    return TradesPlainInnerMax(model, **_attack_flags(args))


def _mart_attack(model, args, num_classes):
    return MartInnerMax(model, **_attack_flags(args))


def _beta(args, num_classes):
    return dict(beta=args.beta)


def _trades_kl_options(args, num_classes):
    return dict(use_cutmix=args.CutMix, beta=args.beta, ls=args.ls)


def _score_lse_options(args, num_classes):
    return dict(use_cutmix=args.CutMix, beta=args.beta, ls=args.ls, num_classes=num_classes, clip_value=args.clip_value)


# The one registry of training objectives: train-wa.py's / train.py's here, in increasing precedence (`select`
# takes the last one the flags ask for), without_DDPM's appended below.
OBJECTIVES = {o.name: o for o in (
    Objective('madry', None, False, None, False, None, 'Madry training', _madry_attack,
              Loss(madry_composite, lambda args, k: dict(keep_clean=args.keep_clean))),
    Objective('trades-plain', 'beta', True, False, False, TradesPlainInnerMax.ATTACKS, 'TRADES training',
              _trades_plain_attack, Loss(functools.partial(attack_first_composite, outer_loss=trades_plain_outer_loss),
                                         _beta)),
    Objective('trades-kl', 'beta', True, True, True, TradesInnerMax.ATTACKS, 'TRADES / LSE training',
              _trades_attack('kl'), Loss(functools.partial(trades_composite, outer_loss=trades_kl_loss),
                                         _trades_kl_options)),
    Objective('score-lse', 'LSE', True, True, True, TradesInnerMax.ATTACKS, 'TRADES / LSE training',
              _trades_attack('lse'), Loss(functools.partial(trades_composite, outer_loss=score_lse_loss),
                                          _score_lse_options)),
    Objective('mart', 'mart', True, None, False, MartInnerMax.ATTACKS, 'MART', _mart_attack,
              Loss(functools.partial(attack_first_composite, outer_loss=mart_outer_loss), _beta)),
)}
_PRECEDENCE = tuple(reversed(list(OBJECTIVES.values())))  # MART > SCORE-LSE > TRADES > Madry (train-wa.py's only)


def _asks_for(args, objective):
    """Whether the flags ask for `objective` (its flag given; --beta: given a value, 0 included)."""
    if objective.flag is None:
        return True
    value = getattr(args, objective.flag)
    return value is not None and value is not False


def _trainable(objective, weight_averaging):
    return objective.needs_weight_averaging in (None, weight_averaging)


def select(args, weight_averaging):
    """The objective's name as the reference dispatches: the first, in MART > SCORE-LSE > TRADES > Madry order,
    that the flags ask for, that has its --beta (without --beta, Madry) and that the trainer can train."""
    return next(o.name for o in _PRECEDENCE if _asks_for(args, o) and (args.beta is not None or not o.needs_beta)
                and _trainable(o, weight_averaging))


def check_beta(args):
    """An objective the flags ask for that needs --beta has it (without it the reference silently trains Madry
    PGD-AT, docs/differences.md item 43)."""
    if args.beta is not None:
        return
    for o in _PRECEDENCE:
        if o.needs_beta and _asks_for(args, o):
            flag = '--' + o.flag
            raise UserError(f'{flag} needs --beta (without it the reference silently trains Madry PGD-AT); '
                            f'e.g. {flag} --beta 4.0, or drop {flag}.')


def resolve(args, weight_averaging):
    """The Objective the flags train, or a UserError naming the unsupported combination (one per run, at start-up).

    Args:
        args: the parsed train-wa.py / train.py flags (beta, mart, LSE, CutMix, attack).
        weight_averaging: whether the run averages weights (--tau > 0, the WATrainer).
    """
    check_beta(args)
    asked = [o.flag for o in _PRECEDENCE if o.flag is not None and _asks_for(args, o)]
    untrainable = any(not any(_trainable(o, weight_averaging) for o in _PRECEDENCE if o.flag == f) for f in asked)
    no_cutmix = args.CutMix and not any(o.allows_cutmix and _trainable(o, weight_averaging) for o in _PRECEDENCE)
    if untrainable or no_cutmix:
        raise UserError('--LSE and --CutMix need weight averaging (the reference WATrainer): use --tau > 0.')
    objective = OBJECTIVES[select(args, weight_averaging)]
    if args.CutMix and not objective.allows_cutmix:
        raise UserError('--CutMix needs soft labels, which only TRADES and --LSE take: add --beta, drop --mart.')
    if objective.attacks is not None and args.attack not in objective.attacks:
        only = ' only' if len(objective.attacks) == 1 else ''
        raise UserError(f'{objective.label} supports --attack {" or ".join(objective.attacks)}{only}.')
    return objective


# ---------------------------------------------------------------------------------------------------------------
# without_DDPM/train_cifar.py: PGD-AT, TRADES or standard training with a chosen divergence, keyed by --attack
# and picked by `resolve_without_ddpm`; bound and trained like train-wa.py's (`divergence_composite`).
# ---------------------------------------------------------------------------------------------------------------

WITHOUT_DDPM_SCRIPT = 'without_DDPM/train_cifar.py'


def _divergence_pgd(model, args, num_classes):
    return DivergencePGD(model, eps=args.epsilon / 255., step=args.pgd_alpha / 255., iters=args.attack_iters,
                         restarts=args.restarts, norm=args.norm, div=args.divergence, num_classes=num_classes)


def _trades_divergence_pgd(model, args, num_classes):
    return TradesDivergencePGD(model, eps=args.epsilon / 255., step=args.pgd_alpha / 255., iters=args.attack_iters,
                               div=args.divergence)


def _no_attack(model, args, num_classes):
    return None


def _divergence_options(trades):
    def options(args, num_classes):
        o = dict(num_classes=num_classes, ls=args.label_smoothing, divergence=args.divergence,
                 bound=clip_bound(args.clip_loss, args.divergence, num_classes))
        if trades:
            o.update(trades_lambda=args.TRADESlambda, clip_clean=not args.not_clip_clean)
        return o
    return options


def _without_ddpm(name, loss, make_attack, norms=None, norm_error=''):
    """An entry of train_cifar.py; the train-wa.py rules are neutral (it has no --beta, --tau, --CutMix)."""
    return Objective(name, flag=None, needs_beta=False, needs_weight_averaging=None, allows_cutmix=False,
                     attacks=None, label=name, make_attack=make_attack, loss=loss, script=WITHOUT_DDPM_SCRIPT,
                     norms=norms, norm_error=norm_error)


OBJECTIVES.update((o.name, o) for o in (
    _without_ddpm('PGD', Loss(divergence_composite, _divergence_options(False)), _divergence_pgd),
    _without_ddpm('TRADES', Loss(divergence_composite, _divergence_options(True)), _trades_divergence_pgd,
                  norms=('linf',), norm_error='--attack TRADES has no L2 step (the original crashed): use --norm '
                                              'linf, or --attack PGD.'),
    _without_ddpm('Standard', Loss(divergence_composite, _divergence_options(False)), _no_attack),
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

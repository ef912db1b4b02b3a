"""The training objectives, one registry (`OBJECTIVES`): flag rules, inner maximisation and loss of each."""
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


class Loss(NamedTuple):
    """`composite(model, attack, x, y, **options(args, num_classes))`, its keyword arguments read once by `bind`."""
    composite: Callable
    options: Callable


@dataclass(frozen=True)
class Objective:
    """One training objective. flag: the train-wa.py dest that asks for it (None: Madry); needs_weight_averaging:
    True/False = only --tau > 0 / 0, None = either; attacks, norms: the --attack / --norm values taken (None: any)."""
    name: str
    flag: Optional[str]
    needs_beta: bool
    needs_weight_averaging: Optional[bool]
    allows_cutmix: bool
    attacks: Optional[Tuple[str, ...]]
    label: str
    make_attack: Optional[Callable]
    loss: Callable
    script: str = 'train-wa.py'
    norms: Optional[Tuple[str, ...]] = None
    norm_error: str = ''


def bind(loss, model, args, num_classes, attack):
    """`loss(x, y) -> (loss, metrics)` with the run's model (maybe a DDP / compile wrapper), attack and flags."""
    return functools.partial(loss.composite, model, attack, **loss.options(args, num_classes))


def _madry_attack(model, args, num_classes):
    return create_attack(model, nn.CrossEntropyLoss(), args.attack, eps=args.attack_eps, step=args.attack_step,
                         iters=args.attack_iter, rand_init_type='uniform')


def _inner_max(cls, *divergence):
    def make(model, args, num_classes):
        return cls(model, *divergence, attack=args.attack, eps=args.attack_eps, step=args.attack_step,
                   iters=args.attack_iter)
    return make


def _beta(args, num_classes):
    return dict(beta=args.beta)


def _score_lse_options(args, num_classes):
    return dict(use_cutmix=args.CutMix, beta=args.beta, ls=args.ls, num_classes=num_classes, clip_value=args.clip_value)


# In increasing precedence: `select` takes the last one the flags ask for.
OBJECTIVES = {o.name: o for o in (
    Objective('madry', None, False, None, False, None, 'Madry training', _madry_attack,
              Loss(madry_composite, lambda args, k: dict(keep_clean=args.keep_clean))),
    Objective('trades-plain', 'beta', True, False, False, TradesPlainInnerMax.ATTACKS, 'TRADES training',
              _inner_max(TradesPlainInnerMax),
              Loss(functools.partial(attack_first_composite, outer_loss=trades_plain_outer_loss), _beta)),
    Objective('trades-kl', 'beta', True, True, True, TradesInnerMax.ATTACKS, 'TRADES / LSE training',
              _inner_max(TradesInnerMax, 'kl'),
              Loss(functools.partial(trades_composite, outer_loss=trades_kl_loss),
                   lambda args, k: dict(use_cutmix=args.CutMix, beta=args.beta, ls=args.ls))),
    Objective('score-lse', 'LSE', True, True, True, TradesInnerMax.ATTACKS, 'TRADES / LSE training',
              _inner_max(TradesInnerMax, 'lse'),
              Loss(functools.partial(trades_composite, outer_loss=score_lse_loss), _score_lse_options)),
    Objective('mart', 'mart', True, None, False, MartInnerMax.ATTACKS, 'MART', _inner_max(MartInnerMax),
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
    """The first objective asked for, with its --beta, that the trainer can train (docs/differences.md item 37)."""
    return next(o.name for o in _PRECEDENCE if _asks_for(args, o) and (args.beta is not None or not o.needs_beta)
                and _trainable(o, weight_averaging))


def resolve(args, weight_averaging):
    """The Objective the flags train, or a UserError for one it cannot train (docs/differences.md items 26 and 43)."""
    for o in _PRECEDENCE:
        if args.beta is None and o.needs_beta and _asks_for(args, o):
            flag = '--' + o.flag
            raise UserError(f'{flag} needs --beta (without it the reference silently trains Madry PGD-AT); '
                            f'e.g. {flag} --beta 4.0, or drop {flag}.')
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


WITHOUT_DDPM_SCRIPT = 'without_DDPM/train_cifar.py'


def _divergence_pgd(model, args, num_classes):
    return DivergencePGD(model, eps=args.epsilon / 255., step=args.pgd_alpha / 255., iters=args.attack_iters,
                         restarts=args.restarts, norm=args.norm, div=args.divergence, num_classes=num_classes)


def _trades_divergence_pgd(model, args, num_classes):
    return TradesDivergencePGD(model, eps=args.epsilon / 255., step=args.pgd_alpha / 255., iters=args.attack_iters,
                               div=args.divergence)


def _divergence_options(trades):
    def options(args, num_classes):
        o = dict(num_classes=num_classes, ls=args.label_smoothing, divergence=args.divergence,
                 bound=clip_bound(args.clip_loss, args.divergence, num_classes))
        if trades:
            o.update(trades_lambda=args.TRADESlambda, clip_clean=not args.not_clip_clean)
        return o
    return options


def _without_ddpm(name, loss, make_attack, norms=None, norm_error=''):
    """An entry of train_cifar.py, neutral to the train-wa.py rules (it has no --beta, --tau, --CutMix)."""
    return Objective(name, flag=None, needs_beta=False, needs_weight_averaging=None, allows_cutmix=False,
                     attacks=None, label=name, make_attack=make_attack, loss=loss, script=WITHOUT_DDPM_SCRIPT,
                     norms=norms, norm_error=norm_error)


OBJECTIVES.update((o.name, o) for o in (
    _without_ddpm('PGD', Loss(divergence_composite, _divergence_options(False)), _divergence_pgd),
    _without_ddpm('TRADES', Loss(divergence_composite, _divergence_options(True)), _trades_divergence_pgd,
                  norms=('linf',), norm_error='--attack TRADES has no L2 step (the original crashed): use --norm '
                                              'linf, or --attack PGD.'),
    _without_ddpm('Standard', Loss(divergence_composite, _divergence_options(False)),
                  lambda model, args, k: None),
))
WITHOUT_DDPM_OBJECTIVES = {n: o for n, o in OBJECTIVES.items() if o.script == WITHOUT_DDPM_SCRIPT}


def resolve_without_ddpm(args):
    """The without_DDPM Objective of --attack, or a UserError for an --norm it does not take."""
    objective = WITHOUT_DDPM_OBJECTIVES[args.attack]
    if objective.norms is not None and args.norm not in objective.norms:
        raise UserError(objective.norm_error)
    return objective

"""Attack library: `ATTACKS`, `create_attack` and the trainers' attack rules.

Every attack is an object: `attack(x, y) -> x_adv`, detached, images (B, C, H, W) in [0, 1]; arguments in the
order (eps, step, iters). It runs the model in eval mode with frozen parameters and restores every
submodule's mode and every parameter's `requires_grad` afterwards, also when it raises.
"""
from core.utils.errors import UserError

from .apgd import APGD, L2APGDAttack, LinfAPGDAttack
from .base import Attack
from .deepfool import DeepFoolAttack, L2DeepFoolAttack, LinfDeepFoolAttack
from .fgsm import FGMAttack, FGSMAttack
from .pgd import L2PGDAttack, LinfPGDAttack, PGDAttack
from .utils import CWLoss

__all__ = ['ATTACKS', 'VARIABLE_BATCH_ATTACKS', 'create_attack', 'create_eval_attack', 'create_wa_eval_attack',
           'attack_norm', 'CWLoss', 'Attack', 'PGDAttack', 'LinfPGDAttack', 'L2PGDAttack',
           'FGSMAttack', 'FGMAttack', 'DeepFoolAttack', 'LinfDeepFoolAttack', 'L2DeepFoolAttack', 'APGD',
           'LinfAPGDAttack', 'L2APGDAttack']

ATTACKS = ('fgsm', 'linf-pgd', 'fgm', 'l2-pgd', 'linf-df', 'l2-df', 'linf-apgd', 'l2-apgd')

LINF_ATTACKS = ('fgsm', 'linf-pgd', 'linf-df', 'linf-apgd')
# Attacks whose forwards run on shrinking subsets of the batch (APGD attacks only the points still robust):
# with cudnn.benchmark every new subset size re-tunes every convolution, so train-wa.py turns it off for them.
VARIABLE_BATCH_ATTACKS = ('linf-apgd', 'l2-apgd')


def _check_attack_type(attack_type):
    if attack_type not in ATTACKS:
        raise UserError(f'unknown attack {attack_type!r}: choose one of {", ".join(ATTACKS)}.')


def create_attack(model, criterion, attack_type, eps, step, iters, rand_init_type='uniform', clip_min=0., clip_max=1.):
    """Build the attack named `attack_type`.

    fgsm / fgm: one step of size eps (criterion). linf-pgd / l2-pgd: PGD(criterion, eps, `iters` steps of `step`,
    random start `rand_init_type`: 'uniform' or 'normal'). linf-df / l2-df: DeepFool(overshoot 0.02, `iters`
    iterations, no binary search); criterion, eps and step ignored, NOT eps-bounded. linf-apgd / l2-apgd: APGD(loss
    'ce' whatever the criterion, 2 restarts, eps, `iters`); step ignored. clip_min, clip_max: the image box
    (APGD: always [0, 1]).
    """
    _check_attack_type(attack_type)
    if attack_type == 'fgsm':
        return FGSMAttack(model, criterion, eps=eps, clip_min=clip_min, clip_max=clip_max)
    if attack_type == 'fgm':
        return FGMAttack(model, criterion, eps=eps, clip_min=clip_min, clip_max=clip_max)
    if attack_type in ('linf-pgd', 'l2-pgd'):
        cls = LinfPGDAttack if attack_type == 'linf-pgd' else L2PGDAttack
        return cls(model, criterion, eps=eps, eps_iter=step, nb_iter=iters, rand_init=True, clip_min=clip_min,
                   clip_max=clip_max, rand_init_type=rand_init_type)
    if attack_type in ('linf-df', 'l2-df'):
        cls = LinfDeepFoolAttack if attack_type == 'linf-df' else L2DeepFoolAttack
        return cls(model, overshoot=0.02, nb_iter=iters, search_iter=0, clip_min=clip_min, clip_max=clip_max)
    cls = LinfAPGDAttack if attack_type == 'linf-apgd' else L2APGDAttack
    return cls(model, criterion, n_restarts=2, eps=eps, nb_iter=iters)


def create_eval_attack(model, criterion, attack_type, eps, step, iters):
    """The eval attack of a run without weight averaging (`core/training/builder.py`), by the training --attack:

    | attack_type         | train attack                     | eval attack                                  |
    |---------------------|----------------------------------|----------------------------------------------|
    | linf-pgd / l2-pgd   | create_attack(type, eps, a, T)   | same type, eps, a, 2T                        |
    | fgsm / linf-df      | create_attack(type, ...)         | linf-pgd, eps 8/255, 2/255, 20 iterations    |
    | fgm / l2-df         | create_attack(type, ...)         | l2-pgd, eps 128/255, 15/255, 20 iterations   |
    | linf-apgd / l2-apgd | create_attack(type, ...) (APGD)  | linf-pgd / l2-pgd, eps, a, 2T                |

    The APGD row is ours: the reference has no eval attack for APGD (UnboundLocalError), so the
    matching PGD with 2T steps is used, as for the PGD types (docs/differences.md item 3). It uses `criterion`
    (the reference's nn.CrossEntropyLoss(), mean) and a uniform random start. With weight averaging the builder
    calls `create_wa_eval_attack` instead.
    """
    _check_attack_type(attack_type)
    if attack_type in ('linf-pgd', 'l2-pgd'):
        eval_args = (attack_type, eps, step, 2 * iters)
    elif attack_type in ('fgsm', 'linf-df'):
        eval_args = ('linf-pgd', 8 / 255, 2 / 255, 20)
    elif attack_type in ('fgm', 'l2-df'):
        eval_args = ('l2-pgd', 128 / 255, 15 / 255, 20)
    else:  # linf-apgd / l2-apgd
        eval_args = (attack_type.replace('apgd', 'pgd'), eps, step, 2 * iters)
    return create_attack(model, criterion, *eval_args, rand_init_type='uniform')


def create_wa_eval_attack(wa_model, attack_type, eps, step, iters):
    """The eval attack with weight averaging (the reference's WATrainer's, docs/differences.md item 40):
    create_attack(wa_model, CWLoss, type, eps, step, 4T, 'uniform'); with the defaults L-inf PGD-40 on the summed
    CW margin, for the validation and the test adversarial accuracy (DeepFool and APGD ignore the criterion)."""
    return create_attack(wa_model, CWLoss, attack_type, eps, step, 4 * iters, rand_init_type='uniform')


def attack_norm(attack_type):
    """Threat model of an attack type: 'Linf' for fgsm, linf-pgd, linf-df, linf-apgd; 'L2' otherwise.

    (The reference's eval-aa.py maps linf-apgd to 'L2', docs/differences.md item 23; this function does not.)
    """
    _check_attack_type(attack_type)
    return 'Linf' if attack_type in LINF_ATTACKS else 'L2'


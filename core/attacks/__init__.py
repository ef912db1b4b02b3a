"""Attack library: `ATTACKS`, `create_attack` and the trainers' attack rules.

Every attack is an object: `attack(x, y) -> x_adv`, `attack.perturb(x, y) -> (x_adv, x_adv - x)`, detached,
images (B, C, H, W) in [0, 1]. It runs the model in eval mode with frozen parameters and restores every
submodule's mode and every parameter's `requires_grad` afterwards, also when it raises.
"""
from core.utils.errors import UserError

from .apgd import APGD, L2APGDAttack, LinfAPGDAttack
from .base import Attack
from .deepfool import DeepFoolAttack, L2DeepFoolAttack, LinfDeepFoolAttack
from .fgsm import FGMAttack, FGSMAttack
from .pgd import L2PGDAttack, LinfPGDAttack, PGDAttack
from .utils import CWLoss

__all__ = ['ATTACKS', 'VARIABLE_BATCH_ATTACKS', 'create_attack', 'create_eval_attack', 'create_train_and_eval_attacks',
           'create_wa_eval_attack', 'attack_norm', 'CWLoss', 'Attack', 'PGDAttack', 'LinfPGDAttack', 'L2PGDAttack',
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


def create_attack(model, criterion, attack_type, attack_eps, attack_iter, attack_step, rand_init_type='uniform',
                  clip_min=0., clip_max=1.):
    """Build the attack named `attack_type`.

    fgsm / fgm: one step of size eps (criterion). linf-pgd / l2-pgd: PGD(criterion, eps, attack_iter steps of
    attack_step, random start `rand_init_type`). linf-df / l2-df: DeepFool(overshoot 0.02, attack_iter iterations,
    no binary search); criterion, eps and step are ignored and the result is NOT eps-bounded. linf-apgd / l2-apgd:
    APGD(loss 'ce' whatever the criterion, 2 restarts, eps, attack_iter iterations); step ignored.

    Arguments:
        model (nn.Module): images (B, C, H, W) -> logits (B, K).
        criterion (callable): loss(logits, y) -> scalar, e.g. nn.CrossEntropyLoss() or CWLoss.
        attack_type (str): one of ATTACKS.
        attack_eps (float), attack_iter (int), attack_step (float): eps, T, alpha.
        rand_init_type (str): 'uniform' or 'normal' (PGD only). Default: 'uniform'.
        clip_min (float), clip_max (float): image box (not used by APGD, always [0, 1]). Default: 0., 1.

    Returns:
        An `Attack`.
    """
    _check_attack_type(attack_type)
    if attack_type == 'fgsm':
        return FGSMAttack(model, criterion, eps=attack_eps, clip_min=clip_min, clip_max=clip_max)
    if attack_type == 'fgm':
        return FGMAttack(model, criterion, eps=attack_eps, clip_min=clip_min, clip_max=clip_max)
    if attack_type in ('linf-pgd', 'l2-pgd'):
        cls = LinfPGDAttack if attack_type == 'linf-pgd' else L2PGDAttack
        return cls(model, criterion, eps=attack_eps, nb_iter=attack_iter, eps_iter=attack_step, rand_init=True,
                   clip_min=clip_min, clip_max=clip_max, rand_init_type=rand_init_type)
    if attack_type in ('linf-df', 'l2-df'):
        cls = LinfDeepFoolAttack if attack_type == 'linf-df' else L2DeepFoolAttack
        return cls(model, overshoot=0.02, nb_iter=attack_iter, search_iter=0, clip_min=clip_min, clip_max=clip_max)
    cls = LinfAPGDAttack if attack_type == 'linf-apgd' else L2APGDAttack
    return cls(model, criterion, n_restarts=2, eps=attack_eps, nb_iter=attack_iter)


def create_eval_attack(model, criterion, attack_type, attack_eps, attack_iter, attack_step):
    """The eval attack of a run without weight averaging (`core/training/builder.py`), by the training --attack:

    | attack_type         | train attack                     | eval attack                                  |
    |---------------------|----------------------------------|----------------------------------------------|
    | linf-pgd / l2-pgd   | create_attack(type, eps, T, a)   | same type, eps, 2T, a                        |
    | fgsm / linf-df      | create_attack(type, ...)         | linf-pgd, eps 8/255, 20 iterations, 2/255    |
    | fgm / l2-df         | create_attack(type, ...)         | l2-pgd, eps 128/255, 20 iterations, 15/255   |
    | linf-apgd / l2-apgd | create_attack(type, ...) (APGD)  | linf-pgd / l2-pgd, eps, 2T, a                |

    The APGD row is ours: the reference has no eval attack for APGD (UnboundLocalError), so the
    matching PGD with 2T steps is used, as for the PGD types (docs/differences.md item 3). It uses `criterion`
    (the reference's nn.CrossEntropyLoss(), mean) and a uniform random start. With weight averaging the builder
    calls `create_wa_eval_attack` instead.
    """
    _check_attack_type(attack_type)
    if attack_type in ('linf-pgd', 'l2-pgd'):
        eval_args = (attack_type, attack_eps, 2 * attack_iter, attack_step)
    elif attack_type in ('fgsm', 'linf-df'):
        eval_args = ('linf-pgd', 8 / 255, 20, 2 / 255)
    elif attack_type in ('fgm', 'l2-df'):
        eval_args = ('l2-pgd', 128 / 255, 20, 15 / 255)
    else:  # linf-apgd / l2-apgd
        eval_args = (attack_type.replace('apgd', 'pgd'), attack_eps, 2 * attack_iter, attack_step)
    return create_attack(model, criterion, *eval_args, rand_init_type='uniform')


def create_train_and_eval_attacks(model, criterion, attack_type, attack_eps, attack_iter, attack_step):
    """(train attack, eval attack) of a run without weight averaging, as the reference's Trainer built them: the
    train attack is `create_attack` of the flags with a uniform random start, the eval attack `create_eval_attack`."""
    _check_attack_type(attack_type)
    train_attack = create_attack(model, criterion, attack_type, attack_eps, attack_iter, attack_step,
                                 rand_init_type='uniform')
    return train_attack, create_eval_attack(model, criterion, attack_type, attack_eps, attack_iter, attack_step)


def create_wa_eval_attack(wa_model, attack_type, attack_eps, attack_iter, attack_step):
    """The eval attack with weight averaging (the reference's WATrainer's, docs/differences.md item 40):
    create_attack(wa_model, CWLoss, type, eps, 4T, step, 'uniform').

    With the defaults: L-inf PGD-40, eps 8/255, step 2/255, CW margin loss (summed), on the averaged model.
    Used for both the validation and the test adversarial accuracy. DeepFool ignores the loss and APGD always
    uses 'ce', so for those types the CW criterion has no effect.
    """
    return create_attack(wa_model, CWLoss, attack_type, attack_eps, 4 * attack_iter, attack_step,
                         rand_init_type='uniform')


def attack_norm(attack_type):
    """Threat model of an attack type: 'Linf' for fgsm, linf-pgd, linf-df, linf-apgd; 'L2' otherwise.

    (The reference's eval-aa.py maps linf-apgd to 'L2', docs/differences.md item 23; this function does not.)
    """
    _check_attack_type(attack_type)
    return 'Linf' if attack_type in LINF_ATTACKS else 'L2'


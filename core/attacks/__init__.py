"""Attack library: every attack is an object, `attack(x, y) -> x_adv` (images in [0, 1]), args (eps, step, iters)."""
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
# APGD's forwards run on shrinking batches, each size a cudnn.benchmark re-tune: the trainers turn it off for them
VARIABLE_BATCH_ATTACKS = ('linf-apgd', 'l2-apgd')


def _check_attack_type(attack_type):
    if attack_type not in ATTACKS:
        raise UserError(f'unknown attack {attack_type!r}: choose one of {", ".join(ATTACKS)}.')


def create_attack(model, criterion, attack_type, eps, step, iters, rand_init_type='uniform'):
    """DeepFool ignores eps (overshoot 0.02), APGD the criterion (loss 'ce', 2 restarts)."""
    _check_attack_type(attack_type)
    if attack_type == 'fgsm':
        return FGSMAttack(model, criterion, eps=eps)
    if attack_type == 'fgm':
        return FGMAttack(model, criterion, eps=eps)
    if attack_type in ('linf-pgd', 'l2-pgd'):
        cls = LinfPGDAttack if attack_type == 'linf-pgd' else L2PGDAttack
        return cls(model, criterion, eps=eps, eps_iter=step, nb_iter=iters, rand_init=True,
                   rand_init_type=rand_init_type)
    if attack_type in ('linf-df', 'l2-df'):
        cls = LinfDeepFoolAttack if attack_type == 'linf-df' else L2DeepFoolAttack
        return cls(model, overshoot=0.02, nb_iter=iters)
    cls = LinfAPGDAttack if attack_type == 'linf-apgd' else L2APGDAttack
    return cls(model, criterion, n_restarts=2, eps=eps, nb_iter=iters)


def create_eval_attack(model, criterion, attack_type, eps, step, iters):
    """The eval attack without weight averaging (APGD: none in the reference, docs/differences.md item 3)."""
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
    """The WATrainer's eval attack (docs/differences.md item 40): the same type, 4T steps on the summed CW margin."""
    return create_attack(wa_model, CWLoss, attack_type, eps, step, 4 * iters, rand_init_type='uniform')


def attack_norm(attack_type):
    """'Linf' or 'L2' (the reference's eval-aa.py maps linf-apgd to 'L2', docs/differences.md item 23; not here)."""
    _check_attack_type(attack_type)
    return 'Linf' if attack_type in LINF_ATTACKS else 'L2'

#!/usr/bin/env python3
"""Clean, PGD-10 (CE, CW) and AutoAttack accuracy of a without_DDPM run's model_best.pth in --out-dir
(docs/without_ddpm.md); model, dataset and epsilon were hard-wired (docs/differences.md item 70)."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import torch  # noqa: E402

from core.attacks.autoattack import VERSIONS, make_autoattack, require_autoattack, run_autoattack  # noqa: E402
from core.attacks.divergence import CEPGD  # noqa: E402
from core.models.without_ddpm import ACTIVATIONS, MODELS, create_without_ddpm_model  # noqa: E402
from core.run.run_dir import STATE_FILE  # noqa: E402
from core.training.trainer import evaluate, to_device  # noqa: E402
from core.training.without_ddpm import DATASETS, DEFAULT_DATA_DIR, load_cifar  # noqa: E402
from core.utils.checkpoint import load_checkpoint, load_state_dict, load_weights  # noqa: E402
from core.utils.distributed import add_device_argument, setup  # noqa: E402
from core.utils.errors import ArgumentParser, UserError, check_number, exit_on_user_error  # noqa: E402
from core.utils.logger import setup_logger  # noqa: E402
from core.utils.utils import seed  # noqa: E402

PGD_ITERS, PGD_STEP = 10, 2


def get_args(argv=None):
    p = ArgumentParser(description='Evaluate a without_DDPM run (clean, PGD-10 CE/CW, AutoAttack).')
    p.add_argument('--batch-size', default=128, type=int)
    # honoured (the original hard-coded its default path) and --device below: docs/differences.md item 67
    p.add_argument('--data-dir', default=None, type=str,
                   help='Root holding cifar10/ (cifar100/) (default: ../../cifar-data seen from without_DDPM/).')
    p.add_argument('--epsilon', default=8, type=int, help='Epsilon of every attack, in units of 1/255.')
    p.add_argument('--out-dir', default='train_fgsm_output', type=str, help='Run folder holding model_best.pth.')
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--activation', default=None, type=str, choices=tuple(ACTIVATIONS))
    extra = p.add_argument_group('beyond the original (hard-wired there)')
    extra.add_argument('--model', default=None, choices=MODELS, help='Default: the run\'s (state-last.pt), else '
                       'PreActResNet18; likewise --activation (ReLU), --width-factor (10), --dataset (CIFAR-10).')
    extra.add_argument('--width-factor', default=None, type=int)
    extra.add_argument('--dataset', default=None, choices=tuple(DATASETS))
    extra.add_argument('--aa-batch-size', default=128, type=int, help='AutoAttack batch size.')
    extra.add_argument('--version', default='standard', choices=VERSIONS + ('none',),
                       help="AutoAttack version ('none' skips AutoAttack).")
    extra.add_argument('--num-samples', default=None, type=int, help='Evaluate the first N test images only.')
    extra.add_argument('--checkpoint', default='model_best.pth',
                       help='File in --out-dir to evaluate (model_best.pth, model_E.pth or state-last.pt).')
    add_device_argument(extra)
    extra.add_argument('--num-workers', type=int, default=2)
    extra.add_argument('--wrn-depth', type=int, default=None, help=argparse.SUPPRESS)  # testing aid: WRN-10-w
    args = p.parse_args(argv)
    state_path = os.path.join(args.out_dir, STATE_FILE)
    saved = load_checkpoint(state_path).get('args', {}) if os.path.isfile(state_path) else {}
    defaults = (('activation', 'ReLU'), ('model', 'PreActResNet18'), ('width_factor', 10), ('dataset', 'CIFAR-10'),
                ('wrn_depth', 34))
    for key, default in defaults:   # the run's architecture unless given
        if getattr(args, key) is None:
            setattr(args, key, saved.get(key, default))
    return args


def main(argv=None):
    args = get_args(argv)
    # unknown choices are argparse errors, negative values refused (docs/differences.md item 69)
    check_number('--epsilon', args.epsilon, 0, 255, example=8)   # in units of 1/255, as train_cifar.py's
    if args.batch_size < 1 or args.aa_batch_size < 1:
        raise UserError('the batch sizes must be >= 1.')
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f'--num-samples {args.num_samples}: must be >= 1.')
    if args.data_dir is None:
        args.data_dir = DEFAULT_DATA_DIR
    path = os.path.join(args.out_dir, args.checkpoint)
    if not os.path.exists(path) and os.path.isfile(os.path.join(args.out_dir, STATE_FILE)):
        raise UserError(f'{path} does not exist: the run writes it at the first epoch whose robust test accuracy is '
                        f'above 0 (as the original); pass --checkpoint {STATE_FILE} to evaluate its last model.')
    if args.version != 'none':
        try:
            require_autoattack()
        except ImportError as e:
            raise UserError(f'{e}; or pass --version none.') from None
    runtime = setup(args.device)
    device = runtime.device
    seed(args.seed)
    _, test_loader, num_classes = load_cifar(args.data_dir, args.dataset, args.batch_size, args.num_workers,
                                             train=False)
    if args.num_samples is not None:
        subset = torch.utils.data.Subset(test_loader.dataset, range(min(args.num_samples, len(test_loader.dataset))))
        test_loader = torch.utils.data.DataLoader(subset, batch_size=args.batch_size, shuffle=False,
                                                  num_workers=args.num_workers)
    state_dict = load_weights(path, key='state_dict') if args.checkpoint != STATE_FILE else \
        load_checkpoint(path)['trainer']['model']  # the .pth files' {'state_dict': ...}, or the state's trained model
    model = create_without_ddpm_model(args.model, num_classes, args.activation, args.width_factor, device,
                                      depth=args.wrn_depth)
    load_state_dict(model, state_dict, source=path)
    model.float().eval()
    logger = setup_logger('without_ddpm.eval_cifar', console='stderr', fmt='[%(asctime)s] - %(message)s',
                          datefmt='%Y/%m/%d %H:%M:%S')  # stderr only, no file (as the original)
    logger.info(args)   # after the inputs' checks, so that bad input is one line

    eps, alpha = args.epsilon / 255., PGD_STEP / 255.

    def accuracy(attack=None):  # one pass per attack, as the original (its random starts' order)
        return evaluate(model, test_loader, runtime, lambda x, y: to_device(x, y, device), (attack,))[0][1]

    print('Clean acc: ', accuracy())
    for loss, label in (('ce', 'CE'), ('cw', 'CW')):
        attack = CEPGD(model, eps, alpha, PGD_ITERS, restarts=1, norm='linf', loss=loss)
        # the label says what runs: 1 restart (the original printed "10 restarts"), docs/differences.md item 70
        print(f'PGD-{PGD_ITERS} (1 restart, step {PGD_STEP}, {label} loss) acc: ', accuracy(attack))

    if args.version != 'none':
        xs, ys = zip(*[(x, y) for x, y in test_loader])
        x_test, y_test = torch.cat(xs), torch.cat(ys)
        # seeded with --seed (the original left AutoAttack unseeded), docs/differences.md item 70
        adversary = make_autoattack(model, 'Linf', eps, version=args.version, seed=args.seed, device=device)
        result = run_autoattack(adversary, x_test, y_test, bs=args.aa_batch_size)
        print('AutoAttack ({}) robust acc: '.format(args.version), result['robust'])


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))

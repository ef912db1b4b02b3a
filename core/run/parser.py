"""Command-line parsers of train-wa.py and eval-aa.py and the checks of the training flags: the reference's flags
and defaults, none pointing at the authors' cluster (docs/differences.md item 44), then this project's."""
import argparse
import os

from core.attacks import ATTACKS, attack_norm
from core.data import AUGMENTATIONS, DATASETS, SEMISUP_DATASETS, augment_arg, validate_unsup_fraction
from core.models import check_model_name
from core.run.run_dir import RESUME_CHANGEABLE_FLAGS
from core.training.builder import pretrained_path
from core.training.objectives import resolve
from core.training.schedules import SCHEDULERS, check_epochs
from core.utils.distributed import AMP_MODES, add_device_argument
from core.utils.errors import SEED_MAX, ArgumentParser, UserError, check_number
from core.utils.utils import str2bool, str2float


def _flag_list(text):
    """'lr' or 'lr,beta' or '--lr' -> ['lr', ...] (argparse dests)."""
    return [name.strip().lstrip('-').replace('-', '_') for name in text.split(',') if name.strip()]


def parser_train(tau=True):
    """Flags of train-wa.py; `tau=False`: of train.py (no `--tau`, so args.txt has no `tau` key)."""
    parser = ArgumentParser(description='Standard + Adversarial Training.')

    parser.add_argument('--augment', type=augment_arg, default=True,
                        help='Augmentation: true/base (crop+flip, the reference), false/none, or one of '
                             + ', '.join(AUGMENTATIONS) + '.')
    parser.add_argument('--batch-size', type=int, default=1024, help='Batch size for training.')
    parser.add_argument('--batch-size-validation', type=int, default=512, help='Batch size for testing.')

    parser.add_argument('--data-dir', type=str, default='./data',
                        help='Root data folder: the dataset is read from DATA_DIR/DATA.')
    parser.add_argument('--log-dir', type=str, default='./logs', help='Root of the run folders: LOG_DIR/DESC.')

    parser.add_argument('-d', '--data', type=str, default='cifar10s', choices=DATASETS, help='Data to use.')
    parser.add_argument('--desc', type=str, required=True,
                        help='Description of experiment. It will be used to name directories.')

    parser.add_argument('-m', '--model', type=check_model_name, default='wrn-28-10-swish', metavar='MODEL',
                        help='Model architecture: one of the reference list, or wrn-D-W[-swish] with (D-4) %% 6 == 0.')
    parser.add_argument('--normalize', type=str2bool, default=False, help='Normalize input.')
    parser.add_argument('--pretrained-file', type=str, default=None, help='Pretrained weights file name.')

    parser.add_argument('-na', '--num-adv-epochs', type=int, default=400, help='Number of adversarial training epochs.')
    parser.add_argument('--adv-eval-freq', type=int, default=25, help='Adversarial evaluation frequency (in epochs).')

    parser.add_argument('--beta', default=None, type=float,
                        help='Stability regularization, i.e., 1/lambda in TRADES.')

    parser.add_argument('--lr', type=float, default=0.4, help='Learning rate for optimizer (SGD).')
    parser.add_argument('--weight-decay', type=float, default=5e-4, help='Optimizer (SGD) weight decay.')
    parser.add_argument('--scheduler', choices=SCHEDULERS, default='cosinew',
                        help='Type of scheduler.')
    parser.add_argument('--nesterov', type=str2bool, default=True, help='Use Nesterov momentum.')
    parser.add_argument('--clip-grad', type=float, default=None, help='Gradient norm clipping.')

    parser.add_argument('-a', '--attack', type=str, choices=ATTACKS, default='linf-pgd', help='Type of attack.')
    parser.add_argument('--attack-eps', type=str2float, default=8 / 255, help='Epsilon for the attack.')
    parser.add_argument('--attack-step', type=str2float, default=2 / 255, help='Step size for PGD attack.')
    parser.add_argument('--attack-iter', type=int, default=10,
                        help='Max. number of iterations (if any) for the attack.')
    parser.add_argument('--keep-clean', type=str2bool, default=False,
                        help='Use clean samples during adversarial training.')

    parser.add_argument('--debug', action='store_true', default=False,
                        help='Debug code. Run 1 epoch of training and evaluation.')
    parser.add_argument('--mart', action='store_true', default=False, help='MART training.')

    parser.add_argument('--unsup-fraction', type=float, default=0.7, help='Ratio of unlabelled data to labelled data.')
    parser.add_argument('--aux-data-filename', type=str, default=None,
                        help='Generated (auxiliary) data: a .npz (image, label), a .pickle, a comma-separated list '
                             'of files or a folder of parts.')

    parser.add_argument('--seed', type=int, default=1, help='Random seed.')

    # SCORE (Pang et al., 2022)
    parser.add_argument('--LSE', action='store_true', default=False, help='LSE training.')
    parser.add_argument('--ls', type=float, default=0.1, help='label smoothing.')
    parser.add_argument('--clip_value', default=0, type=float)
    parser.add_argument('--CutMix', action='store_true', default=False, help='use CutMix.')
    # train-wa.py (the reference adds it after parsing the rest)
    if tau:
        parser.add_argument('--tau', type=float, default=0.995,
                            help='Weight averaging decay (0: no weight averaging).')

    # This reimplementation (after the reference's keys in args.txt).
    extra = parser.add_argument_group('beyond the reference')
    extra.add_argument('--resume', action='store_true', default=False,
                       help='Continue the run LOG_DIR/DESC from its state-last.pt (same flags).')
    extra.add_argument('--resume-from', default=None, metavar='FILE',
                       help='With --resume, while state-last.pt is damaged or missing: continue from FILE of the '
                            'run folder instead (state-prev.pt, the state saved before it).')
    extra.add_argument('--resume-changed-flags', type=_flag_list, default=[], metavar='FLAGS',
                       help='With --resume: what may differ from the saved run on purpose: lr (the schedule '
                            'continues scaled to the new --lr), data (other training data).')
    extra.add_argument('--overwrite', action='store_true', default=False,
                       help='Start a new run in LOG_DIR/DESC; the earlier files move to LOG_DIR/DESC/previous-DATE/.')
    extra.add_argument('--amp', choices=AMP_MODES, default='none',
                       help='Mixed precision: none (float32, the reference), bf16 (CPU or CUDA), '
                            'fp16 (CUDA, with a GradScaler).')
    add_device_argument(extra)
    extra.add_argument('--num-workers', type=int, default=4, help='DataLoader worker processes (the reference: 4).')
    extra.add_argument('--sync-bn', action='store_true', default=False,
                       help='Under torchrun: SyncBatchNorm, batch statistics over all processes.')
    extra.add_argument('--compile', action='store_true', default=False, help='torch.compile the training model.')
    extra.add_argument('--channels-last', action='store_true', default=False,
                       help='channels_last memory format for the model and the batches.')
    extra.add_argument('--tensorboard', action='store_true', default=False,
                       help='Per-step and per-epoch scalars in LOG_DIR/tensorboard/ (needs the tensorboard package).')
    extra.add_argument('--validation-size', type=int, default=1024,
                       help='Training images held out for the Eval lines and model selection (the reference: 1024).')
    extra.add_argument('--stop-after', type=int, default=None, help=argparse.SUPPRESS)  # testing aid
    return parser


def check_radius(flag, value, linf, example):
    """A radius or step > 0; an L-inf one above 1 spans all of [0, 1], so it was meant in pixel units."""
    check_number(flag, value, 0, low_open=True, example=example)
    if linf and value > 1:
        raise UserError(f'{flag} {value:g}: an L-inf radius or step above 1 covers the whole image range [0, 1] '
                        f'(images are in [0, 1]); did you mean {value:g}/255?')
    return value


def check_train_flags(args):
    """One UserError line for each bad flag or combination the reference ignores or fails on late, before anything
    is written (docs/differences.md item 43); returns the run's one resolved objective."""
    linf = attack_norm(args.attack) == 'Linf'
    check_radius('--attack-eps', args.attack_eps, linf, example='8/255')
    check_radius('--attack-step', args.attack_step, linf, example='2/255')
    check_number('--attack-iter', args.attack_iter, 1, example=10)
    check_number('--lr', args.lr, 0, low_open=True, example=0.4)
    check_number('--weight-decay', args.weight_decay, 0, example='5e-4')
    if args.beta is not None:
        check_number('--beta', args.beta, 0, example=5.0)
    check_number('--clip_value', args.clip_value, 0, example=0)
    check_number('--ls', args.ls, 0, 1, high_open=True, example=0.1)
    check_number('--tau', args.tau, 0, 1, high_open=True, example=0.995)
    if args.clip_grad is not None:
        check_number('--clip-grad', args.clip_grad, 0, low_open=True, example=1.0)
    check_number('--seed', args.seed, 0, SEED_MAX, example=1)
    if args.stop_after is not None:
        check_number('--stop-after', args.stop_after, 1)
    if args.num_adv_epochs < 1:
        raise UserError(f'--num-adv-epochs {args.num_adv_epochs}: at least 1 epoch is needed.')
    if args.adv_eval_freq < 1:
        raise UserError(f'--adv-eval-freq {args.adv_eval_freq}: must be >= 1.')
    if args.batch_size < 1 or args.batch_size_validation < 1:
        raise UserError('--batch-size and --batch-size-validation must be >= 1.')
    if args.num_workers < 0:
        raise UserError(f'--num-workers {args.num_workers}: must be >= 0.')
    if args.validation_size < 1:
        raise UserError(f'--validation-size {args.validation_size}: must be >= 1.')
    if args.resume and args.overwrite:
        raise UserError('--resume continues a run and --overwrite starts a new one over it: give only one.')
    if args.resume_from and not args.resume:
        raise UserError('--resume-from names the state a --resume continues from: add --resume, or drop it.')
    if args.resume_changed_flags and not args.resume:
        raise UserError('--resume-changed-flags names flags a --resume may change: add --resume, or drop it.')
    for name in args.resume_changed_flags:
        if name not in RESUME_CHANGEABLE_FLAGS:
            raise UserError(f'--resume-changed-flags {name}: only {", ".join(RESUME_CHANGEABLE_FLAGS)} may change '
                            f'on a resume (the others would change what the saved state means).')
    if args.data in SEMISUP_DATASETS:
        validate_unsup_fraction(args.unsup_fraction)
        if args.aux_data_filename is None:
            raise UserError(f'--data {args.data} trains on generated data: give --aux-data-filename (e.g. '
                            f'cifar10_ddpm.npz), or use --data {args.data[:-1]} for the real data only.')
        for f in args.aux_data_filename.split(','):
            if not os.path.exists(f):
                raise UserError(f'--aux-data-filename: {f} does not exist.')
    objective = resolve(args, weight_averaging=bool(args.tau))
    check_epochs(args.scheduler, args.num_adv_epochs)
    if args.pretrained_file is not None and not os.path.isfile(pretrained_path(args)):
        raise UserError(f'--pretrained-file: {pretrained_path(args)} does not exist; give a run name under '
                        f'--log-dir (its weights-best.pt is read) or a checkpoint file.')
    return objective


def parser_eval():
    """Flags of eval-aa.py; `--num-samples` works (docs/differences.md item 10), a flag given overrides args.txt
    (item 6)."""
    parser = ArgumentParser(description='Robustness evaluation.')

    parser.add_argument('--data-dir', type=str, default='./data',
                        help='Root data folder: the data is read from DATA_DIR/cifar10 (cifar10, cifar10s), '
                             'DATA_DIR/cifar100, DATA_DIR/svhn or DATA_DIR/tiny-imagenet.')
    parser.add_argument('--log-dir', type=str, default='./logs', help='Root of the run folders: LOG_DIR/DESC.')

    parser.add_argument('--desc', type=str, required=True,
                        help='Run to evaluate: reads LOG_DIR/DESC/args.txt and LOG_DIR/DESC/weights-best.pt.')
    parser.add_argument('--num-samples', type=int, default=None,
                        help='Evaluate the first N images of the split (default: all of them).')

    # eval-aa.py
    parser.add_argument('--train', action='store_true', default=False, help='Evaluate on training set.')
    parser.add_argument('-v', '--version', type=str, default='standard', choices=['custom', 'plus', 'standard', 'rand'],
                        help='Version of AA.')

    # eval-rb.py (ignored by eval-aa.py, as in the reference; docs/differences.md item 10)
    parser.add_argument('--source', type=str, default=None, help='Path to source model for black-box evaluation.')
    parser.add_argument('--wb', action='store_true', default=False, help='Perform white-box PGD evaluation.')
    parser.add_argument('--threat', type=str, default='corruptions', choices=['corruptions', 'Linf', 'L2'],
                        help='Threat model for evaluation.')

    parser.add_argument('--seed', type=int, default=1, help='Random seed.')

    # This reimplementation.
    extra = parser.add_argument_group('beyond the reference')
    extra.add_argument('--batch-size', type=int, default=128,
                       help='Batch size of the data loader and of AutoAttack (the reference: 128, hard-coded).')
    extra.add_argument('--weights', type=str, default=None,
                       help='Checkpoint to evaluate (default: LOG_DIR/DESC/weights-best.pt).')
    extra.add_argument('--unaveraged', action='store_true', default=False,
                       help="Evaluate the checkpoint's unaveraged_model_state_dict (the raw model of a "
                            'weight-averaged run) instead of model_state_dict.')
    add_device_argument(extra)
    # Testing aid (docs/evaluation.md; hidden from --help): APGD iterations of --version custom.
    extra.add_argument('--n-iter', type=int, default=None, help=argparse.SUPPRESS)
    return parser

"""AutoAttack evaluation of a run (args.txt, weights-best.pt) or a released checkpoint, in its threat model: log-aa.log,
eval-aa.json, eval-aa.jsonl (docs/evaluation.md; docs/differences.md items 6, 10, 11, 23, 29, 53-57)."""
import argparse
import datetime
import hashlib
import json
import os
import sys
import time

import torch

from core.attacks import attack_norm
from core.attacks.autoattack import flags_to_str, make_autoattack, run_autoattack
from core.data import get_data_info, load_data
from core.models import create_model
from core.run.parser import check_radius, parser_eval
from core.run.run_dir import ARGS_FILE, RunLock, read_args
from core.utils.atomic import write_atomic
from core.utils.checkpoint import load_state_dict, load_weights, sha256_file
from core.utils.distributed import barrier, cleanup, setup
from core.utils.errors import SEED_MAX, Stopped, UserError, check_number, exit_on_user_error
from core.utils.logger import setup_logger
from core.utils.preemption import StopRequest
from core.utils.utils import format_time, seed

# args.txt wins for these unless the flag is given (the reference let it win always: docs/differences.md item 6)
SHARED_KEYS = ('data_dir', 'log_dir', 'desc', 'seed')
REQUIRED_KEYS = ('data', 'model', 'normalize', 'attack', 'attack_eps')
DATA_FOLDERS = {'cifar10': 'cifar10', 'cifar10s': 'cifar10', 'cifar100': 'cifar100', 'cifar100s': 'cifar100',
                'svhn': 'svhn', 'svhns': 'svhn', 'tiny-imagenet': 'tiny-imagenet'}


def resolve_args(argv=None):
    """(args, LOG_DIR/DESC, {key: source}): the defaults, then args.txt (its training keys and SHARED_KEYS), then
    every flag given explicitly."""
    argv = sys.argv[1:] if argv is None else argv
    cli = vars(eval_parser().parse_args(argv))
    quiet = eval_parser()
    for action in quiet._actions:  # parsed again without defaults: the flags given explicitly
        action.default = argparse.SUPPRESS
    explicit = vars(quiet.parse_args(argv))
    run_dir = os.path.join(cli['log_dir'], cli['desc'])
    saved = read_args(run_dir, fix='pass --log-dir and --desc so that LOG_DIR/DESC holds the run (args.txt and '
                                   'weights-best.pt)')
    missing = [k for k in REQUIRED_KEYS if k not in saved]
    if missing:
        raise UserError(f'{os.path.join(run_dir, ARGS_FILE)}: missing {", ".join(missing)}; it must hold the training '
                        'flags of the run.')

    merged, source = dict(cli), {k: 'default' for k in cli}
    for key, value in saved.items():
        if key in SHARED_KEYS or key not in cli:
            merged[key], source[key] = value, 'args.txt'
    for key, value in explicit.items():
        merged[key], source[key] = value, 'command line'
    return argparse.Namespace(**merged), run_dir, source


def data_folder(data):
    if data not in DATA_FOLDERS:
        raise UserError(f'args.txt: unknown data {data!r}; eval-aa.py evaluates {", ".join(DATA_FOLDERS)}.')
    return DATA_FOLDERS[data]


def collect(loader, limit):
    """All (or the first `limit`) images and labels of a loader, as two CPU tensors."""
    batches, count = [], 0
    for batch in loader:
        batches.append(batch)
        count += len(batch[1])
        if limit is not None and count >= limit:
            break
    return tuple(torch.cat(parts)[:limit] for parts in zip(*batches))


def eval_parser():
    parser = parser_eval()
    parser.add_argument('--out-dir', type=str, default=None,
                        help='Folder for log-aa.log, eval-aa.json(l) and the AutoAttack state (default: the run '
                             'folder); for a run on a read-only share.')
    return parser


def check_inputs(args, run_dir):
    """The checkpoint path, once every flag and number is checked (before anything is written)."""
    weights = args.weights if args.weights is not None else os.path.join(run_dir, 'weights-best.pt')
    if not os.path.isfile(weights):
        hint = ''
        if args.weights is None and os.path.isfile(os.path.join(run_dir, 'weights-last.pt')):
            hint = f' ({os.path.join(run_dir, "weights-last.pt")} exists: pass --weights to evaluate it)'
        raise UserError(f'no checkpoint to evaluate: tried {weights}{hint}; pass --weights FILE.')
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f'--num-samples {args.num_samples}: must be a positive number of images.')
    if args.batch_size < 1:
        raise UserError(f'--batch-size {args.batch_size}: must be positive.')
    if args.n_iter is not None and (args.version != 'custom' or args.n_iter < 1):
        raise UserError('--n-iter (a testing aid) needs --version custom and a positive number of iterations.')
    check_number('--seed', args.seed, 0, SEED_MAX, example=1)
    check_radius(f'attack_eps of {os.path.join(run_dir, ARGS_FILE)}', args.attack_eps,
                 attack_norm(args.attack) == 'Linf', example='8/255')
    return weights


def read_data(args, source, notes):
    """The plain split (unshuffled, no augmentation) as (data folder, info, x, y, split size)."""
    data_dir = os.path.join(args.data_dir, data_folder(args.data))
    info = get_data_info(data_dir)
    seed(args.seed)
    try:
        _, _, train_loader, test_loader = load_data(data_dir, batch_size=args.batch_size,
                                                    batch_size_test=args.batch_size, num_workers=0,
                                                    use_augmentation=False, shuffle_train=False)
    except UserError as e:
        if source.get('data_dir') == 'args.txt':
            raise UserError(f'{e} (data_dir {args.data_dir!r} comes from args.txt; pass --data-dir)') from None
        raise
    if args.train:
        notes.append('Evaluating on training set.')
    loader = train_loader if args.train else test_loader
    split_size = len(loader.dataset)
    if args.num_samples is not None and args.num_samples > split_size:
        raise UserError(f'--num-samples {args.num_samples}: the {"training" if args.train else "test"} split of '
                        f'{info["data"]} has only {split_size} images.')
    x, y = collect(loader, args.num_samples)
    notes.append(f'Data: {data_dir}, {"train" if args.train else "test"} split, {len(y)} of {split_size} images.')
    return data_dir, info, x, y


def read_model(args, info, weights, device, notes):
    """The run's architecture with the checkpoint's weights (finite, checked by load_state_dict), frozen."""
    notes.append(args.model)
    model = create_model(args.model, args.normalize, info, device)
    key = 'unaveraged_model_state_dict' if args.unaveraged else 'model_state_dict'
    load_state_dict(model, load_weights(weights, key), source=weights, model_from=f'model {args.model!r} of args.txt',
                    fix='pass --weights of a checkpoint of this run, or --log-dir/--desc of the run it comes from')
    if args.unaveraged:
        notes.append('Using the unaveraged model.')
    elif getattr(args, 'tau', None):
        notes.append('Using WA model.')
    model.eval()
    # parameters frozen (docs/differences.md item 54): input gradients only, FAB-T's .backward() would otherwise
    # fill and hold weight grads
    model.requires_grad_(False)
    return model, key


def write_results(out_dir, summary, state_path):
    """eval-aa.json: the latest evaluation; eval-aa.jsonl: one line per evaluation."""
    json_path = os.path.join(out_dir, 'eval-aa.json')
    write_atomic(json_path, lambda f: f.write((json.dumps(summary, indent=2) + '\n').encode()))
    with open(os.path.join(out_dir, 'eval-aa.jsonl'), 'a') as f:
        f.write(json.dumps(summary) + '\n')
    if os.path.isfile(state_path):  # this evaluation's own scratch file, complete now
        os.remove(state_path)
    return json_path


def main(argv=None):
    with StopRequest(immediate=True), RunLock() as lock:  # SIGTERM, SIGUSR1, Ctrl-C: one line, exit 128 + signal
        return evaluate(argv, lock)


def evaluate(argv, lock):
    start = time.time()
    args, run_dir, source = resolve_args(argv)
    weights = check_inputs(args, run_dir)
    out_dir = args.out_dir if args.out_dir is not None else run_dir
    runtime = setup(args.device)
    device, primary = runtime.device, runtime.is_primary
    if primary:  # one writer per output folder (two evaluations would share log and state); read-only: one line
        lock.acquire(out_dir, 'pass --out-dir DIR, a folder you can write, for log-aa.log and eval-aa.json')
    notes = [f'Using device: {device}' + (f' x {runtime.world_size} processes' if runtime.distributed else '')]
    data_dir, info, x_test, y_test = read_data(args, source, notes)
    model, key = read_model(args, info, weights, device, notes)

    log_path = os.path.join(out_dir, 'log-aa.log')
    # stdout and log-aa.log (appended); several processes (torchrun): the first one logs
    log = setup_logger('score-at.eval-aa', log_path, console='stdout', enabled=primary).info
    log(f'==== eval-aa.py {datetime.datetime.now().isoformat(timespec="seconds")} ====')
    log(f'Run: {run_dir}, checkpoint: {weights}' + (f', output: {out_dir}' if out_dir != run_dir else ''))
    for name in ('data_dir', 'seed'):
        if source.get(name) == 'args.txt':
            log(f'{name} = {getattr(args, name)!r} (from args.txt; pass --{name.replace("_", "-")} to change it)')
    for note in notes:
        log(note)

    summary, state_path = attack(args, model, key, weights, info, x_test, y_test, runtime, out_dir, log_path, log)
    summary.update(data_dir=data_dir, wall_time_s=round(time.time() - start, 1),
                   date=datetime.datetime.now().isoformat(timespec='seconds'))
    json_path = write_results(out_dir, summary, state_path) if primary else os.path.join(out_dir, 'eval-aa.json')
    barrier(runtime)
    cleanup()
    log(f'Clean accuracy: {100 * summary["clean_accuracy"]:.2f}%, robust accuracy: '
        f'{100 * summary["robust_accuracy"]:.2f}% ({summary["norm"]}, eps {summary["eps"]:.6f}, {summary["n"]} '
        f'images, {format_time(time.time() - start)}); written to {json_path}')
    log('Script Completed.')
    return summary


def attack(args, model, key, weights, info, x_test, y_test, runtime, out_dir, log_path, log):
    """AutoAttack on (x_test, y_test), resumable from its state file: (summary without timings, state path)."""
    seed(args.seed)
    norm = attack_norm(args.attack)
    eps = float(args.attack_eps)
    checkpoint_sha256 = sha256_file(weights)
    config = dict(checkpoint_sha256=checkpoint_sha256, state_dict=key, split='train' if args.train else 'test',
                  n=len(y_test), data=info['data'], norm=norm, eps=eps, version=args.version, seed=args.seed,
                  batch_size=args.batch_size, n_iter=args.n_iter)
    state_key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    state_path = os.path.join(out_dir, f'eval-aa-state-{state_key}.json')
    log(f'AutoAttack: version {args.version}, norm {norm}, eps {eps:.6f} ({eps * 255:.2f}/255), seed {args.seed}, '
        f'{len(y_test)} images, batch size {args.batch_size}')
    adversary = make_autoattack(model, norm, eps, version=args.version, seed=args.seed, device=runtime.device,
                                log_path=log_path if runtime.is_primary else None, n_iter=args.n_iter)
    started = time.time()
    try:
        result = run_autoattack(adversary, x_test, y_test, bs=args.batch_size, state_path=state_path, runtime=runtime)
    except Stopped as e:
        raise Stopped(e.signum, f'{e}: the chunks already attacked are kept in {state_path}; run the same command '
                                'again to continue from there') from None
    seconds = time.time() - started   # this invocation's attack time (a resumed evaluation counts its own part)
    summary = dict(
        clean_accuracy=result['clean'], robust_accuracy_after=result['attacks'], robust_accuracy=result['robust'],
        counts=result['counts'], n=result['n'], split=config['split'], data=info['data'], data_dir=None,
        model=args.model, eps=eps, norm=norm, version=args.version, seed=args.seed, batch_size=args.batch_size,
        n_iter=args.n_iter, checkpoint=os.path.abspath(weights), checkpoint_sha256=checkpoint_sha256,
        state_dict=key, backend=result['backend'], resumed=result['resumed'],
        max_perturbation=result['max_perturbation'], processes=runtime.world_size, wall_time_s=None, date=None,
        seconds=seconds, images_per_s=result['n'] / max(seconds, 1e-9))
    # per image, in the order of the split: '1' = classified correctly (clean) / robust to every attack
    summary['per_image'] = {'clean': None if result['clean_flags'] is None else flags_to_str(result['clean_flags']),
                            'robust': flags_to_str(result['robust_flags'])}
    return summary, state_path


if __name__ == '__main__':
    exit_on_user_error(main)

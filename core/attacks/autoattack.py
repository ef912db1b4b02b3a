"""One adapter over the official `autoattack` package (first) and `pyautoattack` (docs/differences.md item 57)."""
import contextlib
import inspect
import json
import logging
import sys
import time

import torch
from tqdm import tqdm

from core.utils.atomic import write_atomic
from core.utils.distributed import all_gather_object
from core.utils.logger import routed, setup_logger

try:  # the official package first
    from autoattack import AutoAttack as _AutoAttack
    from autoattack.autopgd_base import APGDAttack

    BACKEND = 'autoattack'
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pyautoattack import AutoAttack as _AutoAttack
        from pyautoattack.autopgd_base import APGDAttack

        BACKEND = 'pyautoattack'
    except ImportError:
        _AutoAttack = APGDAttack = None
        BACKEND = None

VERSIONS = ('standard', 'plus', 'custom', 'rand')
CUSTOM_ATTACKS = ('apgd-ce', 'apgd-t')  # eval-aa.py's `--version custom`
PYAA_LOGGER = 'auto-attack'
STATE_FORMAT = 'score-at eval-aa state 1'


def require_autoattack():
    if BACKEND is None:
        raise ImportError('AutoAttack is not installed: pip install pyautoattack '
                          '(or the official package: pip install git+https://github.com/fra31/auto-attack)')


def _backend_of(adversary):
    root = type(adversary).__module__.split('.')[0]
    return 'pyautoattack' if root == 'pyautoattack' else 'autoattack'


def set_apgd_iterations(attack, n_iter):
    """APGD's iteration budget with the checkpoints its constructor derives from it."""
    attack.n_iter = n_iter
    attack.n_iter_orig = n_iter
    attack.n_iter_2 = max(int(0.22 * n_iter), 1)
    attack.n_iter_min = max(int(0.06 * n_iter), 1)
    attack.size_decr = max(int(0.03 * n_iter), 1)


def _log_path(adversary):
    return getattr(adversary if _backend_of(adversary) == 'pyautoattack' else adversary.logger, 'log_path', None)


@contextlib.contextmanager
def _package_quiet(adversary):
    """Only the package's warnings during a call: its progress lines count the subset it is given."""
    if _backend_of(adversary) == 'pyautoattack':
        with routed(PYAA_LOGGER, _log_path(adversary), level=logging.WARNING):
            yield
        return
    verbose = adversary.verbose
    adversary.verbose = False
    try:
        yield
    finally:
        adversary.verbose = verbose


def make_autoattack(model, norm, eps, version='standard', seed=None, device=None, log_path=None, n_iter=None):
    """AutoAttack (Croce & Hein, 2020) as eval-aa.py's; default device the model's (docs/differences.md item 54)."""
    require_autoattack()
    if version not in VERSIONS:
        raise ValueError(f'unknown AutoAttack version {version!r}: choose one of {", ".join(VERSIONS)}')
    if version != 'custom' and n_iter is not None:
        raise ValueError("n_iter can only be set with version='custom'")
    if device is None:
        device = next(model.parameters()).device
    attacks = list(CUSTOM_ATTACKS) if version == 'custom' else None

    if BACKEND == 'autoattack':
        adversary = _AutoAttack(model, norm=norm, eps=eps, seed=seed, verbose=True, attacks_to_run=attacks or [],
                                version=version, device=device, log_path=log_path)
    else:
        with routed(PYAA_LOGGER, log_path):  # pyautoattack logs 'setting parameters for ... version' here
            adversary = _AutoAttack(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed,
                                    version=version)
        adversary.log_path = log_path

    if version == 'custom':
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
        if n_iter is not None:
            set_apgd_iterations(adversary.apgd, n_iter)
            set_apgd_iterations(adversary.apgd_targeted, n_iter)
    return adversary


def _read_state(path, n, names):
    """The state saved by `run_autoattack` at `path`, or None; ValueError if it belongs to another evaluation."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if state.get('format') != STATE_FORMAT:
        return None
    if state['n'] != n or state['attacks'] != names:
        raise ValueError(f'AutoAttack state {path} is for {state["n"]} images and attacks {state["attacks"]}, not '
                         f'{n} and {names}: move it away or evaluate the same images with the same version')
    return state


def flags_to_str(flags):
    """Per-image bool flags -> '0110...' (the state file's and eval-aa.json's encoding)."""
    return ''.join('1' if f else '0' for f in flags.tolist())


def str_to_flags(s):
    return torch.tensor([c == '1' for c in s], dtype=torch.bool)


def _attack_subset(adversary, attack, x, y, bs):
    """`attack` alone on (x, y) -> (x_adv, y_adv), as inside `run_standard_evaluation`."""
    backend = _backend_of(adversary)
    saved = adversary.attacks_to_run
    adversary.attacks_to_run = [attack]
    try:
        with _package_quiet(adversary):
            if backend == 'pyautoattack':
                return adversary.run_standard_evaluation(x, y, batch_size=bs)
            if 'return_labels' in inspect.signature(adversary.run_standard_evaluation).parameters:
                return adversary.run_standard_evaluation(x, y, bs=bs, return_labels=True)
            x_adv = adversary.run_standard_evaluation(x, y, bs=bs)
            y_adv = torch.cat([adversary.get_logits(x_adv[i:i + bs].to(adversary.device)).max(dim=1)[1].cpu()
                               for i in range(0, len(x_adv), bs)])
            return x_adv, y_adv
    finally:
        adversary.attacks_to_run = saved


def run_autoattack(adversary, x, y, bs=250, state_path=None, chunk_batches=10, runtime=None, progress=True):
    """`run_standard_evaluation(x, y, bs)` in resumable, shared chunks (docs/differences.md items 55, 56 and 57)."""
    x = x.detach().cpu().contiguous()  # the packages' gradient checks `view` the input gradient
    run = _Evaluation(adversary, x, y.detach().cpu(), bs, state_path, runtime)
    resumed = run.start()
    for attack in run.names:
        if attack not in run.after:
            run.attack(attack, chunk_batches, progress)
    return run.result(resumed)


class _Evaluation:
    """The state of one `run_autoattack` call, the same on every process."""

    def __init__(self, adversary, x, y, bs, state_path, runtime):
        self.adversary, self.x, self.y, self.bs, self.state_path = adversary, x, y, bs, state_path
        self.n, self.names = x.shape[0], list(adversary.attacks_to_run)
        self.start_time, self.runtime = time.time(), runtime
        self.world, self.rank = (runtime.world_size, runtime.rank) if runtime is not None else (1, 0)
        self.primary = self.rank == 0
        self.log = setup_logger('score-at.autoattack', _log_path(adversary), console='stdout',
                                enabled=self.primary).info
        self.max_pert = 0.0

    def share(self, obj):
        return all_gather_object(obj, self.runtime) if self.world > 1 else [obj]

    def save(self):
        if self.state_path is not None and self.primary:
            text = json.dumps({
                'format': STATE_FORMAT, 'n': self.n, 'attacks': self.names, 'clean': self.clean,
                'robust': flags_to_str(self.robust), 'after': self.after, 'current': self.current,
                'clean_flags': None if self.clean_flags is None else flags_to_str(self.clean_flags)})
            write_atomic(self.state_path, lambda f: f.write(text.encode()))

    def start(self):
        """Resume from the state file, or run the clean pass; True when resumed."""
        n, state = self.n, None
        if self.state_path is not None:
            if self.primary:  # read once and share, so that every process starts from the same state
                try:
                    state = _read_state(self.state_path, n, self.names)
                except ValueError as e:
                    state = e
            state = self.share(state)[0]
            if isinstance(state, ValueError):
                raise state
        if state is not None:
            self.clean, self.robust = state['clean'], str_to_flags(state['robust'])
            self.after, self.current = state['after'], state['current']
            self.clean_flags = str_to_flags(state['clean_flags']) if state.get('clean_flags') else None
            self.log(f'resuming AutoAttack from {self.state_path}: clean {self.clean}/{n}, '
                     f'{int(self.robust.sum())}/{n} robust, finished: {", ".join(self.after) or "none"}')
        else:
            self.robust = self._clean_pass()
            self.clean_flags = self.robust.clone()
            self.clean, self.after, self.current = int(self.robust.sum()), {}, None
            self.save()
        self.log(f'using {self.adversary.version} version including {", ".join(self.names)}.')
        self.log(f'initial accuracy: {100 * self.clean / n:.2f}% ({self.clean}/{n})')
        self.x_adv = self.x.clone()
        return state is not None

    def _clean_pass(self):
        """The clean predictions' flags, the batches split round-robin over the processes."""
        adversary, x, bs, mine = self.adversary, self.x, self.bs, {}
        with torch.no_grad():
            for k, i in enumerate(range(0, self.n, bs)):
                if k % self.world == self.rank:
                    mine[i] = adversary.get_logits(x[i:i + bs].to(adversary.device)).max(dim=1)[1].cpu()
        pred = torch.empty(self.n, dtype=torch.long)
        for part in self.share(mine):
            for i, p in part.items():
                pred[i:i + len(p)] = p
        return pred.eq(self.y)

    def attack(self, attack, chunk_batches, progress):
        """`attack` on the points still robust, in rounds of one chunk per process."""
        n, bs, world, current = self.n, self.bs, self.world, self.current
        if current is not None and current['attack'] == attack:
            todo, position = torch.nonzero(str_to_flags(current['start'])).flatten(), current['position']
        else:
            todo, position = torch.nonzero(self.robust).flatten(), 0
            self.current = {'attack': attack, 'start': flags_to_str(self.robust), 'position': 0}
        # a chunk per process and round: chunk_batches // world batches, fewer if that leaves a process idle
        batches = -(-len(todo) // bs)
        chunk = max(1, min(max(1, chunk_batches) // world, -(-batches // world))) * bs
        self.log(f'running {attack} on {len(todo)} points' if len(todo) else
                 'no robust datapoints left, skipping remaining attacks')
        bar = tqdm(total=-(-len(todo) // chunk), initial=position // chunk, desc=attack, unit='chunk',
                   disable=not (progress and self.primary) or len(todo) == 0, leave=False, dynamic_ncols=True,
                   file=sys.stderr, mininterval=0.1 if sys.stderr.isatty() else 30.0)
        while position < len(todo):
            starts = [position + r * chunk for r in range(world) if position + r * chunk < len(todo)]
            n_fooled = self._round(attack, todo, starts, chunk)
            end = min(len(todo), position + len(starts) * chunk)
            done, position = end - position, end
            self.current['position'] = position
            self.save()
            self.log(f'{attack} - {position}/{len(todo)} points attacked, {n_fooled} of the last {done} '
                     f'fooled; robust: {int(self.robust.sum())}/{n} ({time.time() - self.start_time:.1f} s)')
            bar.update(len(starts))
            bar.set_postfix_str(f'robust {100 * int(self.robust.sum()) / n:.2f}%')
        bar.close()
        self.after[attack] = int(self.robust.sum())
        self.current = None
        self.save()
        self.log(f'robust accuracy after {attack.upper()}: {100 * self.after[attack] / n:.2f}% '
                 f'({self.after[attack]}/{n}, total time {time.time() - self.start_time:.1f} s)')

    def _round(self, attack, todo, starts, chunk):
        """One chunk per process, then every process records all the fooled points; the number fooled."""
        x, y, report = self.x, self.y, None
        if self.rank < len(starts):  # this process's chunk of the round
            idx = todo[starts[self.rank]:starts[self.rank] + chunk]
            adv, y_adv = _attack_subset(self.adversary, attack, x[idx], y[idx], self.bs)
            fooled = ~y_adv.detach().cpu().eq(y[idx])
            report = (idx[fooled], adv.detach().cpu()[fooled])
        n_fooled = 0
        for part in self.share(report):
            if part is None:
                continue
            hit, adv = part
            self.robust[hit] = False
            self.x_adv[hit] = adv
            n_fooled += len(hit)
            if len(hit):
                delta = (adv - x[hit]).flatten(1)
                norm = self.adversary.norm
                size = delta.abs().max(1)[0] if norm == 'Linf' else (
                    delta.norm(p=2, dim=1) if norm == 'L2' else delta.abs().sum(1))
                self.max_pert = max(self.max_pert, size.max().item())
        return n_fooled

    def result(self, resumed):
        n, names, after, x_adv, final = self.n, self.names, self.after, self.x_adv, int(self.robust.sum())
        self.log(f'max {self.adversary.norm} perturbation: {self.max_pert:.5f} (eps {self.adversary.epsilon:.5f}), '
                 f'nan in tensor: {int(torch.isnan(x_adv).sum())}, max: {x_adv.max().item():.5f}, '
                 f'min: {x_adv.min().item():.5f}')
        self.log(f'robust accuracy: {100 * final / n:.2f}% ({final}/{n})')
        counts = {'clean': self.clean, 'attacks': {a: after[a] for a in names}, 'robust': final}
        return dict(n=n, clean=self.clean / n, attacks={a: after[a] / n for a in names}, robust=final / n,
                    counts=counts, clean_flags=self.clean_flags, robust_flags=self.robust, resumed=resumed,
                    backend=_backend_of(self.adversary), max_perturbation=self.max_pert, x_adv=x_adv)

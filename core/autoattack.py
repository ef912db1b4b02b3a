"""One adapter over the two AutoAttack packages (SPEC section 10).

The official package (`autoattack`, installed from git) is used when it can be imported;
otherwise `pyautoattack` (PyPI), which carries the same attack code under another import name
with a keyword-only wrapper API. Everything else in this project imports AutoAttack from here.

    adversary = make_autoattack(model, norm='Linf', eps=8/255, version='standard', seed=1, log_path='log-aa.log')
    result = run_autoattack(adversary, x, y, bs=128, state_path='aa-state.json')
    result['clean'], result['attacks'], result['robust']      # accuracies in [0, 1]

The two packages differ only in their call signatures and in how they log (the official one prints
and appends to `log_path` through `autoattack.other_utils.Logger`; pyautoattack logs to
`logging.getLogger('auto-attack')` at DEBUG). Both run the same attacks with the same settings,
so a version, a seed and the same inputs give the same adversarial examples.
"""
import ast
import contextlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path

import torch

try:  # the official package first
    from autoattack import AutoAttack as _AutoAttack
    from autoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    BACKEND = 'autoattack'
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pyautoattack import AutoAttack as _AutoAttack
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        BACKEND = 'pyautoattack'
    except ImportError:
        _AutoAttack = APGDAttack = APGDAttack_targeted = None
        BACKEND = None

VERSIONS = ('standard', 'plus', 'custom', 'rand')
CUSTOM_ATTACKS = ('apgd-ce', 'apgd-t')  # eval-aa.py's `--version custom` (SPEC section 10, step 8)
PYAA_LOGGER = 'auto-attack'


def require_autoattack():
    """Raise a clear ImportError when neither package is installed."""
    if BACKEND is None:
        raise ImportError('AutoAttack is not installed: pip install pyautoattack '
                          '(or the official package: pip install git+https://github.com/fra31/auto-attack)')


def _backend_of(adversary):
    """'autoattack' or 'pyautoattack': the package whose AutoAttack class built `adversary`."""
    root = type(adversary).__module__.split('.')[0]
    return 'pyautoattack' if root == 'pyautoattack' else 'autoattack'


def set_apgd_iterations(attack, n_iter):
    """Set the iteration budget of an APGD attack after construction, with its derived checkpoints.

    APGD derives its step-size checkpoints from `n_iter` in `__init__` (n_iter_2 = 0.22 n, n_iter_min = 0.06 n,
    size_decr = 0.03 n), so all of them are reset here exactly as the constructor would have set them.
    """
    attack.n_iter = n_iter
    attack.n_iter_orig = n_iter
    attack.n_iter_2 = max(int(0.22 * n_iter), 1)
    attack.n_iter_min = max(int(0.06 * n_iter), 1)
    attack.size_decr = max(int(0.03 * n_iter), 1)


@contextlib.contextmanager
def _pyaa_logging(log_path):
    """Route pyautoattack's DEBUG log to stdout and (appending) to `log_path` for the duration of the block."""
    logger = logging.getLogger(PYAA_LOGGER)
    old_level, old_propagate = logger.level, logger.propagate
    formatter = logging.Formatter('%(message)s')
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_path is not None:
        handlers.append(logging.FileHandler(log_path, mode='a'))
    for h in handlers:
        h.setFormatter(formatter)
        logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _log_context(adversary):
    """A context yielding `log(msg)`: the package's own logger, so our lines land where AutoAttack's do."""
    if _backend_of(adversary) == 'pyautoattack':
        @contextlib.contextmanager
        def ctx():
            with _pyaa_logging(getattr(adversary, 'log_path', None)) as logger:
                yield logger.info
        return ctx()
    return contextlib.nullcontext(adversary.logger.log)


def make_autoattack(model, norm, eps, version='standard', seed=None, device=None, log_path=None,
                    attacks_to_run=None, n_iter=None):
    """Build AutoAttack (Croce & Hein, ICML 2020) as eval-aa.py configures it, with whichever package is installed.

    Threat model: `norm`-ball ('Linf' or 'L2') of radius `eps` around images in [0, 1].

    Args:
        model: classifier, NCHW images in [0, 1] -> logits (N, K); put it in eval mode first.
        norm: 'Linf', 'L2' (or 'L1').
        eps: radius of the threat model.
        version: 'standard' (apgd-ce, apgd-t, fab-t, square), 'plus', 'rand', or 'custom': the reference's
            custom set, apgd-ce + apgd-t with `n_restarts = 1` each and every other setting at the
            AutoAttack constructor's defaults (100 iterations, rho 0.75, eot 1, 9 target classes).
        seed: the attacks' seed (None: AutoAttack draws it from the clock).
        device: where AutoAttack moves each batch; default the device of the model's parameters (never the
            official package's hard-coded 'cuda').
        log_path: AutoAttack's log file, appended to (None: stdout only).
        attacks_to_run: for version 'custom' only; default `CUSTOM_ATTACKS`.
        n_iter: testing aid, version 'custom' only: the APGD iteration budget (default: the constructor's 100).
    Returns:
        The package's `AutoAttack` object (attributes apgd, apgd_targeted, fab, square, attacks_to_run), to be
        passed to `run_autoattack`.
    """
    require_autoattack()
    if version not in VERSIONS:
        raise ValueError(f'unknown AutoAttack version {version!r}: choose one of {", ".join(VERSIONS)}')
    if version != 'custom' and (attacks_to_run is not None or n_iter is not None):
        raise ValueError("attacks_to_run and n_iter can only be set with version='custom'")
    if device is None:
        device = next(model.parameters()).device
    attacks = list(attacks_to_run or CUSTOM_ATTACKS) if version == 'custom' else None

    if BACKEND == 'autoattack':
        adversary = _AutoAttack(model, norm=norm, eps=eps, seed=seed, verbose=True, attacks_to_run=attacks or [],
                                version=version, device=device, log_path=log_path)
    else:
        with _pyaa_logging(log_path):  # pyautoattack logs 'setting parameters for ... version' here
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


@contextlib.contextmanager
def _fixed_state_loader(adversary):
    """Make the package's `EvaluationState.from_disk` read back what its `to_disk` wrote.

    Both packages' `to_disk` write the set of attacks with `json.dump(default=str)`, i.e. as the string
    "{'apgd-ce', 'apgd-t'}", and `from_disk` returns it (and the finished attacks) without converting back, so a
    restored state never matches `set(attacks_to_run)` and `add_run_attack` fails on a list: resuming raises.
    For the duration of the call, the module's `EvaluationState` is replaced by a subclass that converts both.
    """
    module = sys.modules.get(type(adversary).__module__)
    original = getattr(module, 'EvaluationState', None)
    if original is None:
        yield
        return

    class EvaluationState(original):
        @classmethod
        def from_disk(cls, path):
            state = super().from_disk(path)
            if isinstance(state._attacks_to_run, str):
                state._attacks_to_run = set(ast.literal_eval(state._attacks_to_run))
            state._attacks_to_run = set(state._attacks_to_run)
            state._run_attacks = set(state._run_attacks)
            return state

    module.EvaluationState = EvaluationState
    try:
        yield
    finally:
        module.EvaluationState = original


def _current_attack(adversary, obj):
    """The AutoAttack attack name that is calling `obj.perturb` (its state tells which one)."""
    if obj is adversary.apgd:
        return 'apgd-' + adversary.apgd.loss
    if obj is adversary.apgd_targeted:
        return 'apgd-t'
    if obj is adversary.fab:
        return 'fab-t' if adversary.fab.targeted else 'fab'
    return 'square'


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json_atomic(path, obj):
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def run_autoattack(adversary, x, y, bs=250, state_path=None):
    """Run AutoAttack and return the accuracies it logs, as numbers.

    Same computation as the package's `run_standard_evaluation(x, y, bs)`: clean accuracy, then each attack in
    `adversary.attacks_to_run` on the points still robust. To report the robust accuracy after each attack
    exactly (the packages only log it as a rounded percentage), every attack's `perturb` is wrapped for the
    duration of the call to count the points it fools (one extra forward per batch, the same one AutoAttack does).

    Resume: with `state_path`, when the installed package supports it, AutoAttack saves its robust flags and
    finished attacks there after every batch and continues from them when the file exists. A sidecar file
    `<state_path>.progress.json` keeps the robust counts of finished attacks for the report. A state file left
    by an interruption before the clean accuracy was computed is unusable and is replaced.

    Args:
        adversary: from `make_autoattack`.
        x: (N, C, H, W) images in [0, 1] (any device; moved batch by batch to the adversary's device).
        y: (N,) int64 labels.
        bs: batch size.
        state_path: AutoAttack state file (JSON) or None.
    Returns:
        dict with `n`, `clean` (accuracy), `attacks` ({attack: robust accuracy after it}, in run order; None if a
        resumed run has no record of an attack finished earlier), `robust` (final robust accuracy),
        `counts` (the same as numbers of images), `resumed` (bool), `backend`, `x_adv` (adversarial examples of
        this call; for a resumed run only those found after the resume).
    """
    n = x.shape[0]
    x = x.contiguous()  # the packages' gradient checks `view` the input gradient, which fails on other layouts
    names = list(adversary.attacks_to_run)
    backend = _backend_of(adversary)
    supports_state = 'state_path' in inspect.signature(adversary.run_standard_evaluation).parameters
    if state_path is not None and not supports_state:
        state_path = None
    progress_path = None if state_path is None else f'{state_path}.progress.json'

    with _log_context(adversary) as log:
        # -- where do we start: a fresh run or an AutoAttack state left by an interrupted one
        state = _read_json(state_path) if state_path is not None and os.path.exists(state_path) else None
        if state_path is not None and os.path.exists(state_path) and (state is None or
                                                                      state.get('_robust_flags') is None):
            log(f'AutoAttack state {state_path} holds no robust flags yet (interrupted before the clean pass): '
                'starting afresh')
            os.replace(state_path, f'{state_path}.unusable')
            state = None
        done_before = {}
        if state is not None:
            flags = state['_robust_flags']
            if len(flags) != n:
                raise ValueError(f'AutoAttack state {state_path} is for {len(flags)} images, not {n}: '
                                 'remove it or evaluate the same images')
            robust_start = int(sum(bool(f) for f in flags))
            clean_correct = int(round(state['_clean_accuracy'] * n))
            saved = (_read_json(progress_path) or {}) if progress_path else {}
            done_before = {a: saved.get(a) for a in state.get('_run_attacks', [])}
            log(f'resuming AutoAttack from {state_path}: {robust_start}/{n} points robust, '
                f'finished: {", ".join(done_before) or "none"}')
        else:
            clean_correct = 0
            with torch.no_grad():
                for i in range(0, n, bs):
                    xb = x[i:i + bs].to(adversary.device)
                    yb = y[i:i + bs].to(adversary.device)
                    clean_correct += adversary.get_logits(xb).max(dim=1)[1].eq(yb).sum().item()
            robust_start = clean_correct

        # -- count, per attack, the points each perturb call fools
        fooled = {a: 0 for a in names}
        record = {}  # attack -> robust count after it, for attacks finished in this call
        order = []

        def note_finished():
            robust = robust_start - sum(fooled[a] for a in order)
            record[order[-1]] = robust
            log(f'{order[-1]} finished: {robust}/{n} points remain robust')
            if progress_path is not None:
                _write_json_atomic(progress_path, {**{a: c for a, c in done_before.items() if c is not None},
                                                   **record})

        def wrap(obj):
            original = obj.perturb

            def perturb(xb, yb, *args, **kwargs):
                name = _current_attack(adversary, obj)
                if not order or order[-1] != name:
                    if order:
                        note_finished()
                    order.append(name)
                x_adv = original(xb, yb, *args, **kwargs)
                with torch.no_grad():
                    pred = adversary.get_logits(x_adv).max(dim=1)[1]
                fooled[name] = fooled.get(name, 0) + int((~yb.to(pred.device).eq(pred)).sum().item())
                return x_adv

            obj.perturb = perturb

        attack_objects = [adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square]
        for obj in attack_objects:
            wrap(obj)
        try:
            kwargs = {'state_path': Path(state_path)} if state_path is not None else {}
            with torch.no_grad(), _fixed_state_loader(adversary):
                if backend == 'pyautoattack':
                    try:
                        out = adversary.run_standard_evaluation(x, y, batch_size=bs, **kwargs)
                    except UnboundLocalError:
                        # pyautoattack 0.2.0 returns `y_adv`, never set on its restore path, after the attacks
                        # have run and the final state has been written; the state file holds the result.
                        if state is None:
                            raise
                        out = None
                else:
                    out = adversary.run_standard_evaluation(x, y, bs=bs, **kwargs)
            if order:
                note_finished()
        finally:
            for obj in attack_objects:
                del obj.perturb  # back to the class's method
        x_adv = out[0] if isinstance(out, tuple) else out  # None after a pyautoattack resume

        # -- robust count after each attack, in order
        counts = {'clean': clean_correct}
        robust = robust_start
        after = {}
        for a in names:
            if a in record:
                robust = record[a]
                after[a] = robust
            elif a in done_before and a not in order:
                after[a] = done_before[a]
            else:  # skipped because no robust point was left
                after[a] = robust
        counts['attacks'] = after
        counts['robust'] = robust

        # -- check against the package's own record of the final robust flags
        final_state = _read_json(state_path) if state_path is not None else None
        if final_state is not None and final_state.get('_robust_flags') is not None:
            package_robust = int(sum(bool(f) for f in final_state['_robust_flags']))
        elif state is None:
            with torch.no_grad():
                package_robust = sum(adversary.get_logits(x_adv[i:i + bs].to(adversary.device)).max(dim=1)[1]
                                     .eq(y[i:i + bs].to(adversary.device)).sum().item() for i in range(0, n, bs))
        else:
            package_robust = robust
        if package_robust != robust:
            log(f'warning: counted {robust} robust points but AutoAttack reports {package_robust}; '
                'reporting AutoAttack\'s number')
            counts['robust'] = robust = package_robust
        log(f'clean: {clean_correct}/{n}, robust: {robust}/{n} ({100 * robust / n:.2f}%)')

    return {
        'n': n,
        'clean': clean_correct / n,
        'attacks': {a: (None if c is None else c / n) for a, c in after.items()},
        'robust': robust / n,
        'counts': counts,
        'resumed': state is not None,
        'backend': backend,
        'x_adv': x_adv,
    }

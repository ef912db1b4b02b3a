"""eval-aa.py and the AutoAttack adapter (docs/differences.md items 6, 10, 11, 23).

A tiny WRN (wrn-16-1-swish) saved in the reference layout is evaluated offline on 8 synthetic images; AutoAttack's
APGD is cut to a few iterations by patching the package's constructor defaults, for the script and for the direct
package call alike, so both run exactly the default code path.
"""
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import core.autoattack as aa
from core.autoattack import flags_to_str
from core.data import get_data_info
from core.errors import exit_on_user_error
from core.models import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
N_IMAGES = 8
FAST_ITERS = 4

_spec = importlib.util.spec_from_file_location('eval_aa', os.path.join(ROOT, 'eval-aa.py'))
eval_aa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_aa)


class NotAStateDict:
    """Pickled as code: torch.load(weights_only=True) must refuse a checkpoint holding it."""


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


@pytest.fixture
def fast_apgd(monkeypatch):
    """APGD with FAST_ITERS iterations wherever the installed package constructs it (default path unchanged)."""
    module = sys.modules[aa._AutoAttack.__module__]

    def fast(cls):
        class Fast(cls):
            def __init__(self, *args, **kwargs):
                kwargs['n_iter'] = FAST_ITERS
                super().__init__(*args, **kwargs)
        return Fast

    monkeypatch.setattr(module, 'APGDAttack', fast(module.APGDAttack))
    monkeypatch.setattr(module, 'APGDAttack_targeted', fast(module.APGDAttack_targeted))


def released_args(**changes):
    with open(os.path.join(FIXTURES, 'released-args.txt')) as f:
        args = json.load(f)
    args['model'] = 'wrn-16-1-swish'  # the released runs are WRN-28-10 / WRN-70-16: too slow for a unit test
    args.update(changes)
    return args


def make_run(tmp_path, args, checkpoint=None, desc='released'):
    """A run folder LOGS/desc with args.txt and weights-best.pt in the reference layout; the data under DATA/cifar10.

    The test images are random; their labels are the model's predictions except for the first two, so that the
    clean accuracy is (N - 2) / N. Returns (data root, log root, desc, model, x, y).
    """
    info = get_data_info('cifar10')
    torch.manual_seed(0)
    model = create_model(args['model'], args['normalize'], info, 'cpu').eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_IMAGES, 32, 32, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).contiguous()  # what ToTensor gives
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10
    data_root = tmp_path / 'data'
    (data_root / 'cifar10').mkdir(parents=True)
    for split in ('train', 'test'):
        np.savez(data_root / 'cifar10' / f'{split}.npz', image=images, label=y.numpy().astype(np.int64))
    run_dir = tmp_path / 'logs' / desc
    run_dir.mkdir(parents=True)
    (run_dir / 'args.txt').write_text(json.dumps(args, indent=4))
    sd = model.state_dict()
    assert next(iter(sd)).startswith('module.0.')
    if checkpoint is None:
        checkpoint = {'model_state_dict': sd, 'unaveraged_model_state_dict': sd}
    torch.save(checkpoint, run_dir / 'weights-best.pt')
    return str(data_root), str(tmp_path / 'logs'), desc, model, x, y


def run_cli(argv, capsys):
    """eval-aa.py's main under exit_on_user_error, on the CPU whatever the host has: (exit code, stdout, stderr)."""
    try:
        exit_on_user_error(lambda: eval_aa.main(['--device', 'cpu'] + list(argv)))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------------------------- end to end
def test_custom_matches_direct_autoattack_on_released_format(tmp_path, capsys, caplog, fast_apgd):
    """The authors' args.txt (cluster paths, cifar10s) evaluates with --data-dir; the numbers equal the package's."""
    data_root, log_root, desc, model, x, y = make_run(tmp_path, released_args(attack_eps=4 / 255))
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--version', 'custom']
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert 'Using WA model.' in out and out.rstrip().endswith('Script Completed.')
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['n'] == N_IMAGES and result['norm'] == 'Linf' and result['version'] == 'custom'
    assert result['eps'] == pytest.approx(4 / 255) and result['seed'] == 1 and result['split'] == 'test'
    assert result['data_dir'] == os.path.join(data_root, 'cifar10')
    assert result['clean_accuracy'] == (N_IMAGES - 2) / N_IMAGES
    assert list(result['robust_accuracy_after']) == ['apgd-ce', 'apgd-t']
    log = (tmp_path / 'logs' / desc / 'log-aa.log').read_text()
    assert 'running apgd-ce' in log and 'Script Completed.' in log
    assert not [f for f in os.listdir(tmp_path / 'logs' / desc) if f.startswith('eval-aa-state')]

    # The package called directly on the same model, images and seed (pyautoattack's or the official API).
    torch.manual_seed(1)
    if aa.BACKEND == 'pyautoattack':
        adversary = aa._AutoAttack(model, attacks=['apgd-ce', 'apgd-t'], device='cpu', eps=4 / 255, norm='Linf',
                                   seed=1, version='custom')
    else:
        adversary = aa._AutoAttack(model, norm='Linf', eps=4 / 255, seed=1, version='custom', device='cpu',
                                   attacks_to_run=['apgd-ce', 'apgd-t'])
    adversary.apgd.n_restarts = 1
    adversary.apgd_targeted.n_restarts = 1
    caplog.set_level(logging.DEBUG, logger='auto-attack')
    with torch.no_grad():
        if aa.BACKEND == 'pyautoattack':
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=128)
        else:
            x_adv = adversary.run_standard_evaluation(x, y, bs=128)
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert result['robust_accuracy'] == robust
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    if aa.BACKEND == 'pyautoattack':  # the per-attack numbers the package logs (as rounded percentages)
        logged = dict(re.findall(r'robust accuracy after (\S+): ([\d.]+)%', caplog.text))
        assert logged, caplog.text
        for attack, percent in logged.items():
            assert f'{100 * result["robust_accuracy_after"][attack.lower()]:.2f}' == percent
    # the fixture makes both attacks matter: apgd-ce fools some points, apgd-t more, some stay robust
    after = result['robust_accuracy_after']
    assert result['clean_accuracy'] > after['apgd-ce'] > after['apgd-t'] == result['robust_accuracy'] > 0


def test_released_args_without_data_dir_names_the_cluster_path(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    code, _, err = run_cli(['--log-dir', log_root, '--desc', desc, '--version', 'custom'], capsys)
    assert code == 2
    assert err.count('\n') == 1 and '/cluster/home/rarade/data/' in err and '--data-dir' in err


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.slow  # a subprocess: imports torch again
def test_missing_args_txt_exit_2_with_path(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'eval-aa.py'), '--log-dir', str(tmp_path),
                           '--desc', 'nothing'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count('\n') == 1 and os.path.join(str(tmp_path), 'nothing', 'args.txt') in proc.stderr


def test_missing_weights_exit_2_with_paths(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    os.remove(os.path.join(log_root, desc, 'weights-best.pt'))
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and os.path.join(log_root, desc, 'weights-best.pt') in err
    other = str(tmp_path / 'elsewhere.pt')
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--weights', other], capsys)
    assert code == 2 and other in err


@pytest.mark.parametrize('change', ['seed', 'eps'])
def test_bad_numbers_exit_2_nothing_written(tmp_path, capsys, change):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack_eps=-1.0 if change == 'eps' else 8 / 255))
    before = sorted(os.listdir(os.path.join(log_root, desc)))
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc] + (['--seed', '-1'] if change == 'seed'
                                                                                else [])
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count('\n') == 1
    assert ('--seed -1' if change == 'seed' else 'attack_eps') in err
    assert sorted(os.listdir(os.path.join(log_root, desc))) == before   # no log-aa.log


def test_truncated_checkpoint_is_named_corrupt(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    path = os.path.join(log_root, desc, 'weights-best.pt')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and f'{path} is corrupt or truncated' in err and 'pickled' not in err


def test_pickled_code_is_refused(tmp_path, capsys):
    info = get_data_info('cifar10')
    sd = create_model('wrn-16-1-swish', False, info, 'cpu').state_dict()
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(),
                                             checkpoint={'model_state_dict': sd, 'payload': NotAStateDict()})
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and 'refused' in err and 'NotAStateDict' in err


def test_unaveraged_weights_missing_exit_2(tmp_path, capsys):
    """--unaveraged on a checkpoint without them (a run without weight averaging) names the file and the fix."""
    sd = create_model('wrn-16-1-swish', False, get_data_info('cifar10'), 'cpu').state_dict()
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(), checkpoint={'model_state_dict': sd})
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--unaveraged'], capsys)
    assert code == 2 and err.count('\n') == 1 and 'weights-best.pt' in err and 'drop --unaveraged' in err


def test_architecture_mismatch_and_unknown_model_exit_2(tmp_path, capsys):
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    args_path = os.path.join(log_root, desc, 'args.txt')
    with open(args_path, 'w') as f:
        json.dump(released_args(model='wrn-22-1-swish'), f)
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and err.count('\n') == 1 and 'wrn-22-1-swish' in err
    with open(args_path, 'w') as f:
        json.dump(released_args(model='vgg16'), f)
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc], capsys)
    assert code == 2 and 'vgg16' in err


# ----------------------------------------------------------------------------------------------- arguments
def test_explicit_flags_override_args_txt(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'args.txt').write_text(json.dumps(released_args(batch_size=1024, seed=7)))
    args, folder, _ = eval_aa.resolve_args(['--log-dir', str(tmp_path), '--desc', 'run'])
    assert folder == str(run_dir)
    assert args.data_dir == '/cluster/home/rarade/data/' and args.seed == 7  # as the reference, when not given
    assert args.batch_size == 128 and args.num_samples is None  # eval's own flags never come from args.txt
    assert args.model == 'wrn-16-1-swish' and args.data == 'cifar10s'
    args, _, _ = eval_aa.resolve_args(['--log-dir', str(tmp_path), '--desc', 'run', '--data-dir', 'D', '--seed', '1'])
    assert args.data_dir == 'D' and args.seed == 1


def test_device_has_the_choices_of_train_wa(capsys):
    """One --device for every script: eval-aa.py refuses what train-wa.py refuses (exit 2 before anything runs)."""
    from core.utils.parser import parser_eval, parser_train

    def choices(parser):
        return next(a.choices for a in parser._actions if a.dest == 'device')
    assert tuple(choices(parser_eval())) == tuple(choices(parser_train())) == ('auto', 'cpu', 'cuda')
    for bad in ('cuda:1', 'gpu'):
        with pytest.raises(SystemExit) as e:
            parser_eval().parse_args(['--device', bad])
        assert e.value.code == 2 and f"invalid choice: '{bad}'" in capsys.readouterr().err


@pytest.mark.parametrize('data, folder', [('cifar10s', 'cifar10'), ('cifar10', 'cifar10'), ('cifar100s', 'cifar100'),
                                          ('svhns', 'svhn'), ('tiny-imagenet', 'tiny-imagenet')])
def test_data_folder(data, folder):
    assert eval_aa.data_folder(data) == folder


# ----------------------------------------------------------------------------------------------- the adapter
class FakeLogger:
    def __init__(self, log_path):
        self.log_path, self.lines = log_path, []

    def log(self, message):
        self.lines.append(message)


class FakeAttack:
    """Fools the points whose id (pixel [0, 0, 0] * 100) is in `fools`, by moving that pixel to another class."""

    def __init__(self, fools=()):
        self.fools, self.n_restarts, self.n_iter, self.calls = set(fools), 5, 100, 0

    def perturb(self, x, y):
        self.calls += 1
        ids = torch.round(x[:, 0, 0, 0] * 100).long()
        adv = x.clone()
        hit = torch.tensor([int(i) in self.fools for i in ids])
        adv[hit, 0, 0, 1] = 1.0
        return adv


class FakeOfficialAutoAttack:
    """The official package's API: positional/keyword signature, Logger, bs=, return_labels=."""

    created = []

    def __init__(self, model, norm='Linf', eps=.3, seed=None, verbose=True, attacks_to_run=[], version='standard',  # noqa: B006 (the official signature)
                 is_tf_model=False, device='cuda', log_path=None):
        self.model, self.device, self.version, self.norm, self.epsilon = model, device, version, norm, eps
        self.verbose = verbose
        self.kwargs = dict(norm=norm, eps=eps, seed=seed, verbose=verbose, attacks_to_run=list(attacks_to_run),
                           version=version, device=device, log_path=log_path)
        if version in ('standard', 'plus', 'rand') and attacks_to_run != []:
            raise ValueError("attacks_to_run will be overridden unless you use version='custom'")
        self.attacks_to_run = list(attacks_to_run) if version == 'custom' else ['apgd-ce', 'apgd-t', 'fab-t', 'square']
        self.logger = FakeLogger(log_path)
        self.apgd, self.apgd_targeted = FakeAttack({0, 2, 4}), FakeAttack({5})
        self.fab, self.square = FakeAttack({6}), FakeAttack()
        self.apgd.loss, self.fab.targeted = 'ce', True
        self.calls = []
        FakeOfficialAutoAttack.created.append(self)

    def get_logits(self, x):
        return self.model(x)

    def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False, state_path=None):
        self.calls.append(dict(attacks=list(self.attacks_to_run), n=len(y_orig), bs=bs, return_labels=return_labels,
                               state_path=state_path, verbose=self.verbose))
        robust = self.get_logits(x_orig).max(1)[1] == y_orig
        x_adv, y_adv = x_orig.clone(), self.get_logits(x_orig).max(1)[1]
        objects = {'apgd-ce': self.apgd, 'apgd-t': self.apgd_targeted, 'fab-t': self.fab, 'square': self.square}
        for attack in self.attacks_to_run:
            idx = robust.nonzero().flatten()
            for start in range(0, len(idx), bs):
                batch = idx[start:start + bs]
                adv = objects[attack].perturb(x_orig[batch], y_orig[batch])
                out = self.get_logits(adv).max(1)[1]
                fooled = out != y_orig[batch]
                robust[batch[fooled]] = False
                x_adv[batch[fooled]], y_adv[batch[fooled]] = adv[fooled], out[fooled]
        return (x_adv, y_adv) if return_labels else x_adv


class PixelModel(torch.nn.Module):
    """Class 0 unless pixel [0, 0, 1] is 1 (class 1); a parameter gives it a device."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 0] = 1.0
        logits[x[:, 0, 0, 1] == 1.0, 1] = 2.0
        return logits + 0 * self.w


def test_official_api_mapping_with_a_fake_package(monkeypatch, tmp_path):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    model = PixelModel()
    x = torch.zeros(8, 3, 2, 2)
    x[:, 0, 0, 0] = torch.arange(8) / 100  # ids 0..7
    y = torch.zeros(8, dtype=torch.long)
    y[7] = 3  # misclassified from the start

    log_path = str(tmp_path / 'log-aa.log')
    adversary = aa.make_autoattack(model, 'L2', 0.5, version='custom', seed=3, log_path=log_path)
    assert adversary.kwargs == dict(norm='L2', eps=0.5, seed=3, verbose=True, attacks_to_run=['apgd-ce', 'apgd-t'],
                                    version='custom', device=torch.device('cpu'), log_path=log_path)
    assert adversary.apgd.n_restarts == 1 and adversary.apgd_targeted.n_restarts == 1
    assert adversary.apgd.n_iter == 100  # the constructor's default stays
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1)
    # one call per attack and chunk of bs points, quiet, labels returned; the chunks of apgd-ce: ids 0-2, 3-5, 6
    assert [(c['attacks'], c['n']) for c in adversary.calls] == [
        (['apgd-ce'], 3), (['apgd-ce'], 3), (['apgd-ce'], 1), (['apgd-t'], 3), (['apgd-t'], 1)]
    assert all(c['bs'] == 3 and c['return_labels'] and c['state_path'] is None and not c['verbose']
               for c in adversary.calls)
    assert adversary.attacks_to_run == ['apgd-ce', 'apgd-t'] and adversary.verbose
    # clean: ids 0..6 right; apgd-ce fools 0, 2, 4; apgd-t fools 5 -> 3 of 8 (ids 1, 3, 6) remain
    assert result['counts'] == {'clean': 7, 'attacks': {'apgd-ce': 4, 'apgd-t': 3}, 'robust': 3}
    assert result['attacks'] == {'apgd-ce': 0.5, 'apgd-t': 0.375} and result['robust'] == 0.375
    assert result['backend'] == 'autoattack'
    log = open(log_path).read()
    assert 'robust accuracy after APGD-T: 37.50% (3/8' in log and 'running apgd-ce on 7 points' in log

    adversary = aa.make_autoattack(model, 'Linf', 8 / 255, version='standard', seed=1, log_path=None)
    assert adversary.kwargs['attacks_to_run'] == [] and adversary.kwargs['version'] == 'standard'
    result = aa.run_autoattack(adversary, x, y, bs=250)
    assert result['counts']['attacks'] == {'apgd-ce': 4, 'apgd-t': 3, 'fab-t': 2, 'square': 2}
    with pytest.raises(ValueError):
        aa.make_autoattack(model, 'Linf', 8 / 255, version='standard', n_iter=5)


@pytest.mark.parametrize('attack, norm', [('linf-apgd', 'Linf'), ('fgsm', 'Linf'), ('l2-pgd', 'L2'), ('fgm', 'L2')])
def test_norm_rule_end_to_end(tmp_path, capsys, monkeypatch, attack, norm):
    """docs/differences.md item 23 fixed: every L-inf attack (linf-apgd included) is evaluated in L-inf."""
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack=attack, attack_eps=0.5, seed=5))
    code, out, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '3',
                              '--batch-size', '2', '--unaveraged'], capsys)
    assert code == 0, err
    kwargs = FakeOfficialAutoAttack.created[-1].kwargs
    assert kwargs['norm'] == norm and kwargs['eps'] == 0.5 and kwargs['seed'] == 5 and kwargs['version'] == 'standard'
    assert kwargs['device'] == torch.device('cpu')
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['n'] == 3 and result['norm'] == norm and result['state_dict'] == 'unaveraged_model_state_dict'
    assert result['backend'] == 'autoattack' and len(result['checkpoint_sha256']) == 64


def test_log_is_appended_not_truncated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    log_path = tmp_path / 'logs' / desc / 'log-aa.log'
    log_path.write_text('an earlier evaluation\n')
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2'],
                           capsys)
    assert code == 0, err
    text = log_path.read_text()
    assert text.startswith('an earlier evaluation\n') and text.rstrip().endswith('Script Completed.')


@pytest.mark.skipif(aa.BACKEND is None, reason='no AutoAttack package')
def test_resume_after_interruption_gives_the_same_numbers(tmp_path):
    """Interrupt AutoAttack mid-way (the model raises), rerun with the same state file: same per-attack counts."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
            self.calls, self.limit = 0, None

        def forward(self, x):
            self.calls += 1
            if self.limit is not None and self.calls > self.limit:
                raise KeyboardInterrupt
            return self.net(x)

    model = Linear().eval()
    x = torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10

    def run(state_path=None, limit=None):
        model.calls, model.limit = 0, limit
        adversary = aa.make_autoattack(model, 'Linf', 0.04, version='custom', seed=0, n_iter=10)
        return aa.run_autoattack(adversary, x, y, bs=3, state_path=state_path, chunk_batches=1)

    fresh = run()
    total = model.calls
    assert fresh['counts']['clean'] == 10 and fresh['counts']['robust'] < fresh['counts']['attacks']['apgd-ce'] < 10
    for i, fraction in enumerate((0.1, 0.4, 0.8)):  # in apgd-ce, in apgd-t, near the end
        state_path = str(tmp_path / f'state{i}.json')
        with pytest.raises(KeyboardInterrupt):
            run(state_path, limit=int(fraction * total))
        assert os.path.exists(state_path)
        resumed = run(state_path)
        assert resumed['resumed'] and resumed['counts'] == fresh['counts']
        assert model.calls < total  # it did continue, not start over


# ----------------------------------------------------------------------------------------------- several processes
@pytest.mark.ddp
@pytest.mark.skipif(aa.BACKEND is None, reason='no AutoAttack package')
def test_two_gloo_processes_equal_one_and_resume_its_state(tmp_path, capsys, monkeypatch):
    """torchrun --nproc_per_node 2 eval-aa.py: the same robust accuracy and per-image flags as one process; and an
    evaluation interrupted in one process resumes in two from its state file, again with the same result."""
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack_eps=4 / 255))
    run_dir = tmp_path / 'logs' / desc
    # batch size 1: one process attacks chunks of 10 points, two processes 5 each (two chunks per round)
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--version', 'custom', '--n-iter', '4',
            '--batch-size', '1', '--device', 'cpu']
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    single = json.loads((run_dir / 'eval-aa.json').read_text())
    assert single['processes'] == 1 and len(single['per_image']['robust']) == N_IMAGES
    assert single['counts']['clean'] > single['counts']['robust'] > 0  # the attack fools some points, not all

    # interrupt a single-process evaluation after its first package call: its state file stays behind
    calls = []

    def interrupted(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args)

    original = aa._attack_subset
    monkeypatch.setattr(aa, '_attack_subset', interrupted)
    with pytest.raises(KeyboardInterrupt):
        eval_aa.main(argv)
    monkeypatch.undo()
    assert [f for f in os.listdir(run_dir) if f.startswith('eval-aa-state')]

    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    env.pop('WORLD_SIZE', None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           os.path.join(ROOT, 'eval-aa.py')] + argv
    for resumed in (True, False):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        double = json.loads((run_dir / 'eval-aa.json').read_text())
        assert double['processes'] == 2 and double['resumed'] is resumed
        for key in ('robust_accuracy', 'robust_accuracy_after', 'counts', 'clean_accuracy'):
            assert double[key] == single[key], key
        assert double['per_image']['robust'] == single['per_image']['robust']
        if not resumed:
            assert double['per_image']['clean'] == single['per_image']['clean']
        assert not [f for f in os.listdir(run_dir) if f.startswith('eval-aa-state')]
        assert proc.stdout.count('Script Completed.') == 1  # only the first process logs
    log = (run_dir / 'log-aa.log').read_text()
    assert log.count('Script Completed.') == 3 and 'x 2 processes' in log


def test_weights_from_a_safetensors_export(tmp_path, capsys, monkeypatch):
    """eval-aa.py --weights reads a .safetensors export of scripts/export.py (one model: --unaveraged refused)."""
    pytest.importorskip('safetensors')  # optional; requirements.txt installs it
    from core.utils.export import export_weights
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    out = str(tmp_path / 'wa.safetensors')
    export_weights(os.path.join(log_root, desc), out)
    argv = ['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '4', '--weights', out]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / 'logs' / desc / 'eval-aa.json').read_text())
    assert result['checkpoint'] == out and result['clean_accuracy'] == 0.5  # images 0, 1 are mislabelled
    assert result['per_image']['clean'] == '0011'
    code, _, err = run_cli(argv + ['--unaveraged'], capsys)
    assert code == 2 and '--unaveraged' in err and err.count('\n') == 1


def test_progress_bar_counts_chunks_with_the_running_robust_accuracy(monkeypatch, capsys):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    x = torch.zeros(8, 3, 2, 2)
    x[:, 0, 0, 0] = torch.arange(8) / 100  # ids 0..7; the fake apgd-ce fools ids 0, 2, 4
    y = torch.zeros(8, dtype=torch.long)
    adversary = aa.make_autoattack(PixelModel(), 'Linf', 0.5, version='custom', seed=3)
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1)
    err = capsys.readouterr().err
    assert 'apgd-ce' in err and '/3 [' in err  # 8 points in chunks of 3: 3 chunks
    assert 'robust 62.50%' in err  # after chunk 1 (ids 0-2: 0 and 2 fooled): 6 of 8 robust
    assert result['counts']['attacks']['apgd-ce'] == 5 and flags_to_str(result['robust_flags']) == '01010011'
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1, progress=False)
    assert 'apgd-ce:' not in capsys.readouterr().err


def test_json_files_written_atomically_with_the_usual_permissions(tmp_path, capsys, monkeypatch):
    """eval-aa.json and the AutoAttack state file: 0666 minus the umask (not mkstemp's 0600), no temporary file left,
    eval-aa.json indented by 2 with a final newline, the state file one compact JSON line."""
    import stat
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args())
    umask = os.umask(0o027)
    try:
        code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '2'],
                               capsys)
        x = torch.zeros(4, 3, 2, 2)
        state_path = tmp_path / 'state.json'
        aa.run_autoattack(aa.make_autoattack(PixelModel(), 'Linf', 0.5, version='custom', seed=3), x,
                          torch.zeros(4, dtype=torch.long), bs=2, state_path=str(state_path), progress=False)
    finally:
        os.umask(umask)
    assert code == 0, err
    path = tmp_path / 'logs' / desc / 'eval-aa.json'
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + '\n'
    state = state_path.read_text()
    assert state == json.dumps(json.loads(state)) and json.loads(state)['format'] == aa.STATE_FORMAT
    for p in (path, state_path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path / 'logs' / desc)) == ['args.txt', 'eval-aa.json', 'log-aa.log',
                                                          'weights-best.pt']
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]

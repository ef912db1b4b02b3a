"""Shared by tests/test_eval_aa.py and tests/test_autoattack.py: eval-aa.py loaded as a module, a run folder in the
reference layout with synthetic data, and a fake of the official AutoAttack package's API."""
import importlib.util
import json
import os

import numpy as np
import torch

from core.data import get_data_info
from core.models import create_model
from core.utils.errors import exit_on_user_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
N_IMAGES = 8

_spec = importlib.util.spec_from_file_location('eval_aa', os.path.join(ROOT, 'eval-aa.py'))
eval_aa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_aa)


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

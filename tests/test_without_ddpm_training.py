"""without_DDPM/train_cifar.py and eval_cifar.py: BN updates and attack invariants, the first steps against a
transcription of the original's sequence of operations, the objectives registry, run files, resume and bad input.

Every expected value is written down independently of the implementation: the original's training step is
transcribed operation by operation (`reference_step`).
"""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from script_runner import run_script
from synthetic import write_cifar10
from without_ddpm_helpers import EVAL, TRAIN

from core.attacks.divergence import CEPGD, DivergencePGD, TradesDivergencePGD
from core.losses.divergences import clip_bound
from core.models.without_ddpm import NormalizedNet
from core.training.objectives import OBJECTIVES, WITHOUT_DDPM_OBJECTIVES, bind, resolve_without_ddpm
from core.training.without_ddpm import ATTACKS, make_optimizer, step_lr
from core.utils.errors import UserError
from core.utils.utils import seed as seed_all

# ---------------------------------------------------------------------------------------------------------------
# Attacks: threat model, modes, BatchNorm updates
# ---------------------------------------------------------------------------------------------------------------

def ns(**kw):
    base = dict(attack='PGD', epsilon=8, pgd_alpha=2, attack_iters=2, restarts=1, norm='linf', divergence='LSE',
                TRADESlambda=6, label_smoothing=0, not_clip_clean=False, clip_loss=0)
    base.update(kw)
    return argparse.Namespace(**base)


class TinyNet(nn.Module):
    """A small BatchNorm network standing in for the backbones (the step, attack and BN tests are about the
    sequence of operations, not the architecture; the architectures are checked by their keys above)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))


def tiny_model():
    return NormalizedNet(TinyNet())


@pytest.fixture(scope='module')
def wrn():
    torch.manual_seed(0)
    return tiny_model()


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize('attack, restarts, expected', [('PGD', 1, 2 + 1), ('PGD', 2, 2 * 2 + 1),
                                                        ('TRADES', 1, 2), ('Standard', 1, 1)])
def test_bn_updates_per_batch(wrn, attack, restarts, expected):
    x, y = images()
    wrn.train()
    bn = wrn.module.bn
    before = int(bn.num_batches_tracked)
    args = ns(attack=attack, restarts=restarts)
    objective = resolve_without_ddpm(args)
    bind(objective.loss, wrn, args, 10, objective.make_attack(wrn, args, 10))(x, y)
    assert int(bn.num_batches_tracked) - before == expected
    assert wrn.training and all(m.training for m in wrn.modules())
    assert all(p.requires_grad for p in wrn.parameters())


@pytest.mark.parametrize('make', [
    lambda m: DivergencePGD(m, 8 / 255, 2 / 255, 2, 1, 'linf', 'KL', 10),
    lambda m: DivergencePGD(m, 0.5, 0.2, 2, 2, 'l2', 'LSE', 10),
    lambda m: TradesDivergencePGD(m, 8 / 255, 2 / 255, 2, 'KL'),
    lambda m: CEPGD(m, 8 / 255, 2 / 255, 2, 2, 'linf', 'cw'),
    lambda m: CEPGD(m, 0.5, 0.2, 2, 1, 'l2', 'ce'),
])
def test_attack_invariants(wrn, make):
    x, y = images()
    wrn.eval()
    attack = make(wrn)
    x_adv = attack(x, y)
    delta = (x_adv - x).flatten(1)
    if attack.norm == 'linf':
        assert delta.abs().max() <= attack.eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= attack.eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in wrn.parameters())
    assert not wrn.training


# ---------------------------------------------------------------------------------------------------------------
# The objectives registry (core/training/objectives.py): --attack's entry, its flag rule, its attack and loss
# ---------------------------------------------------------------------------------------------------------------

def test_without_ddpm_objectives_are_the_attack_choices_with_their_norm_rule():
    assert tuple(WITHOUT_DDPM_OBJECTIVES) == ATTACKS == ('PGD', 'TRADES', 'Standard')
    assert {o.script for o in WITHOUT_DDPM_OBJECTIVES.values()} == {'without_DDPM/train_cifar.py'}
    assert [n for n, o in OBJECTIVES.items() if o.script == 'without_DDPM/train_cifar.py'] == list(ATTACKS)
    for attack, norm in (('PGD', 'linf'), ('PGD', 'l2'), ('TRADES', 'linf'), ('Standard', 'l2')):
        assert resolve_without_ddpm(ns(attack=attack, norm=norm)) is WITHOUT_DDPM_OBJECTIVES[attack]
    with pytest.raises(UserError, match='--attack TRADES has no L2 step'):
        resolve_without_ddpm(ns(attack='TRADES', norm='l2'))


def test_standard_is_the_clipped_divergence_at_the_clean_images(wrn):
    """Standard: no attack, mean_i relu(D(p(x_i), t_i) - b), targets smoothed (here LSE, ls 0.1, --clip_loss 0.2)."""
    x, y = images()
    wrn.eval()
    args = ns(attack='Standard', label_smoothing=0.1, clip_loss=0.2)
    b = 0.2 ** 2 + 0.2 ** 2 / 9   # LSE of the prediction with 0.8 on the true class, 0.2 / 9 elsewhere
    objective = resolve_without_ddpm(args)
    assert objective.make_attack(wrn, args, 10) is None
    with torch.no_grad():
        loss, _ = bind(objective.loss, wrn, args, 10, None)(x, y)
        p = F.softmax(wrn(x), dim=1)
    t = torch.where(F.one_hot(y, 10).bool(), torch.tensor(0.9), torch.tensor(0.1 / 9))  # 1 - ls, ls / (K - 1)
    assert torch.allclose(loss, F.relu(((p - t) ** 2).sum(dim=1) - b).mean(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# The first training steps against the original's sequence of operations, written out here
# ---------------------------------------------------------------------------------------------------------------

MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
STD = torch.tensor((0.2471, 0.2435, 0.2616)).view(3, 1, 1)


def ref_normalize(x):
    return (x - MEAN) / STD


def ref_distance(o, t, div):
    if div == 'LSE':
        return ((o - t) ** 2).sum(dim=1)
    # KL(t || o) as the original computes it on torch >= 2: KLDivLoss(reduction='none')(log o, t) summed over classes
    return nn.KLDivLoss(reduction='none')(torch.log(o), t).sum(dim=1)


def reference_step(net, opt, x, y, div, attack, lam, b, eps, alpha, iters, lr):
    """One batch of the original's train_cifar.py (ls = 0, L-inf, R = 1); `net` is the bare backbone."""
    f = lambda inp: net(ref_normalize(inp))  # noqa: E731
    opt.param_groups[0].update(lr=lr)
    opt.zero_grad()
    if attack == 'PGD':  # attack_pgd_divergence, in train mode
        t = F.one_hot(y, 10).float()
        delta = torch.zeros_like(x).uniform_(-eps, eps)
        delta = torch.max(torch.min(delta, 1 - x), 0 - x)
        delta.requires_grad = True
        for _ in range(iters):
            loss = ref_distance(F.softmax(f(x + delta), dim=1), t, div).mean()
            loss.backward()
            d = torch.clamp(delta.data + alpha * torch.sign(delta.grad.detach()), min=-eps, max=eps)
            delta.data = torch.max(torch.min(d, 1 - x), 0 - x)
            delta.grad.zero_()
        delta = delta.detach()
    else:  # attack_trades_divergence, in eval mode
        net.eval()
        c = F.softmax(f(x), dim=1).detach()
        delta = 0.001 * torch.randn(x.shape)
        delta = torch.max(torch.min(delta, 1 - x), 0 - x)
        for _ in range(iters):
            delta.requires_grad_()
            loss = ref_distance(F.softmax(f(x + delta), dim=1), c, div).mean()
            grad = torch.autograd.grad(loss, [delta])[0]
            d = torch.clamp(delta.detach() + alpha * torch.sign(grad), -eps, eps)
            delta = torch.max(torch.min(d, 1 - x), 0 - x)
        net.train()
        delta = delta.detach()
    t = F.one_hot(y, 10).float()
    p_a = F.softmax(f(torch.clamp(x + delta, 0, 1)), dim=1)
    if attack == 'PGD':
        loss = F.relu(ref_distance(p_a, t, div) - b).mean()
    else:
        p_c = F.softmax(f(x), dim=1)
        loss = F.relu(ref_distance(p_c, t, div) + lam * ref_distance(p_a, p_c, div) - b).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize('attack, div, r, lr', [('PGD', 'LSE', 0.4, 0.05), ('PGD', 'KL', 0.0, 0.1),
                                                ('TRADES', 'LSE', 0.3, 0.05), ('TRADES', 'KL', 0.0, 0.1)])
def test_first_steps_match_the_original_sequence(attack, div, r, lr):
    args = ns(attack=attack, divergence=div, attack_iters=2, lr_max=lr, optimizer='SGDmom', weight_decay=5e-4,
              clip_loss=r)
    b = clip_bound(r, div, 10)
    batches = [images(4, seed=s) for s in (1, 2, 3)]

    seed_all(0)
    model = tiny_model()
    opt, _ = make_optimizer(model.parameters(), 'SGDmom', lr, 5e-4, 110)
    objective = resolve_without_ddpm(args)
    train_attack = objective.make_attack(model, args, 10)
    model.train()
    ours = []
    for i, (x, y) in enumerate(batches):
        opt.param_groups[0].update(lr=step_lr(lr, 0 + (i + 1) / 391))
        loss, _ = bind(objective.loss, model, args, 10, train_attack)(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.append(loss.item())

    seed_all(0)
    net = TinyNet()  # the same initial weights
    ref_opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    theirs = [reference_step(net, ref_opt, x, y, div, attack, 6, b, 8 / 255, 2 / 255, 2, lr) for x, y in batches]

    # the same operations in the same order, both computed here (no cross-CPU drift): bit-equal, KL included
    # (the original's KLDivLoss arithmetic, docs/differences.md item 77)
    assert ours == theirs
    assert ours[0] > 0
    for (k, a), bb in zip(model.module.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, bb), k


# ---------------------------------------------------------------------------------------------------------------
# The scripts: files, resume, bad input, evaluation
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('cifar-data')
    write_cifar10(root, 8, 4)
    return root


def run(script, argv):
    return run_script(script, argv)


def tiny(data_root, *extra):
    return ['--model', 'WideResNet', '--width-factor', '1', '--wrn-depth', '10', '--epochs', '2', '--batch-size', '4',
            '--attack-iters', '1', '--data-dir', data_root, '--device', 'cpu', '--num-workers', '0',
            '--divergence', 'LSE', '--clip_loss', '0.4', '--seed', '1'] + list(extra)


FOLDER = os.path.join('trained_models', 'Triangle', 'CIFAR-10',  # the hidden --wrn-depth is not in the name
                      'WideResNet_PGD_linf_epoch2_eps8_wd0.0005_SGDmomlr0.1_divergenceLSE_clip0.4_seed1')


def test_run_files_resume_and_refusal(data_root, tmp_path, monkeypatch, capsys):
    full, part = tmp_path / 'full', tmp_path / 'part'
    for d in (full, part):
        d.mkdir()
    monkeypatch.chdir(full)
    assert run(TRAIN, tiny(data_root)) == 0
    out = capsys.readouterr()
    assert 'File name:  ' + os.path.basename(FOLDER) in out.out and 'Clip loss bound:  0.17777778208255768' in out.out
    files = sorted(os.listdir(FOLDER))
    states = ['state-last.pt', 'state-last.pt.sha256', 'state-prev.pt', 'state-prev.pt.sha256']   # prev: epoch 1
    assert files == ['model_best.pth', 'model_best.pth.sha256', 'output.log'] + states + [
        'test_acc_record.txt', 'test_robust_acc_record_KL.txt', 'test_robust_acc_record_new.txt'] or \
        files == ['output.log'] + states + ['test_acc_record.txt', 'test_robust_acc_record_KL.txt',
                                            'test_robust_acc_record_new.txt']  # model_best once min(robust) > 0
    assert np.loadtxt(os.path.join(FOLDER, 'test_acc_record.txt')).shape == (2,)
    log = open(os.path.join(FOLDER, 'output.log')).read().splitlines()
    assert log[0].startswith('[') and '] - Namespace(model=' in log[0]
    assert log[1].endswith('Epoch \t Test Acc \t Test Rob. Acc (CE-PGD / LSE-PGD)')
    table = [line for line in log[2:] if '] - Compute-' not in line]   # the original's lines, then ours
    assert table[0].split('] - ')[1].startswith('0 \t ') and len(table) == 2
    compute = [line.split('] - ')[1] for line in log[2:] if '] - Compute-' in line]
    assert len(compute) == 4 and 'FLOP per training image' in compute[0] and 'images/s' in compute[1]
    assert 'device-hours of training in all' in compute[3]
    state = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)

    # an existing run is refused, nothing touched
    before = {f: os.path.getmtime(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER)}
    assert run(TRAIN, tiny(data_root)) == 2
    assert 'already holds files' in capsys.readouterr().err
    assert before == {f: os.path.getmtime(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER)}

    # stop after epoch 0, resume: the same weights and records as the uninterrupted run
    monkeypatch.chdir(part)
    assert run(TRAIN, tiny(data_root, '--stop-after', '0')) == 0
    assert run(TRAIN, tiny(data_root, '--resume', '--test_epsilon', '4')) == 2  # flags differ
    assert 'test_epsilon' in capsys.readouterr().err
    assert run(TRAIN, tiny(data_root, '--resume')) == 0
    resumed = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)
    for k, v in state['trainer']['model'].items():
        assert torch.equal(v, resumed['trainer']['model'][k]), k
    assert resumed['records'] == state['records']
    assert run(TRAIN, tiny(data_root, '--resume')) == 2  # finished
    assert 'already completed' in capsys.readouterr().err
    # state-last.pt lost: --resume names state-prev.pt (epoch 1 done), from which the last epoch is the same again
    for name in ('state-last.pt', 'state-last.pt.sha256'):
        os.remove(os.path.join(FOLDER, name))
    assert run(TRAIN, tiny(data_root, '--resume')) == 2
    assert 'add --resume-from state-prev.pt' in capsys.readouterr().err
    assert run(TRAIN, tiny(data_root, '--resume', '--resume-from', 'state-prev.pt')) == 0
    again = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)
    assert all(torch.equal(v, again['trainer']['model'][k]) for k, v in state['trainer']['model'].items())
    capsys.readouterr()

    # eval_cifar.py on the run's checkpoint (written here if model_best was not)
    ckpt = torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)['trainer']['model']
    torch.save({'state_dict': ckpt, 'test_acc': 0.0}, tmp_path / 'model_best.pth')
    capsys.readouterr()
    assert run(EVAL, ['--out-dir', tmp_path, '--data-dir', data_root, '--device', 'cpu', '--num-workers', '0',
                      '--version', 'none']) == 2   # another architecture (the default PreActResNet18): one line
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'holds a' in err and 'Namespace' not in err, err
    assert run(EVAL, ['--out-dir', tmp_path, '--data-dir', data_root, '--model', 'WideResNet', '--width-factor', '1',
                      '--wrn-depth', '10', '--device', 'cpu', '--num-workers', '0', '--version', 'none']) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    clean = float(out[0].split('Clean acc:  ')[1])
    ce = float(out[1].split('PGD-10 (1 restart, step 2, CE loss) acc:  ')[1])
    cw = float(out[2].split('PGD-10 (1 restart, step 2, CW loss) acc:  ')[1])
    assert 0 <= ce <= clean and 0 <= cw <= clean
    # the run's own folder: the architecture is read from its state-last.pt, which is also a --checkpoint
    assert run(EVAL, ['--out-dir', FOLDER, '--data-dir', data_root, '--device', 'cpu', '--num-workers', '0',
                      '--version', 'none', '--checkpoint', 'state-last.pt']) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    best = os.path.join(FOLDER, 'model_best.pth')
    if os.path.exists(best):   # as after epochs whose robust accuracy stayed 0: the flag that evaluates is named
        os.remove(best)
    assert run(EVAL, ['--out-dir', FOLDER, '--data-dir', data_root, '--device', 'cpu', '--num-workers', '0']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'pass --checkpoint state-last.pt' in err, err


@pytest.mark.parametrize('extra, message', [
    (['--model', 'ResNet50'], 'invalid choice'),
    (['--divergence', 'foo'], 'unknown divergence'),
    (['--optimizer', 'SGD'], 'invalid choice'),
    (['--dataset', 'SVHN'], 'invalid choice'),
    (['--activation', 'Mish'], 'invalid choice'),
    (['--epsilon', '-1'], '--epsilon -1: must be an integer in [0, 255]'),
    (['--lr-max', 'nan'], '--lr-max nan: must be a finite number >= 0'),     # issue: NaN passed `< 0`
    (['--weight_decay', 'inf'], '--weight_decay inf: must be a finite number >= 0'),
    (['--pgd-alpha', 'nan'], '--pgd-alpha nan: must be a finite number in [0, 255]'),
    (['--clip_loss', '1'], '--clip_loss 1.0: must be a finite number in [0, 1)'),
    (['--attack', 'TRADES', '--norm', 'l2'], 'no L2 step'),
    (['--activation', 'GELU'], 'WideResNet has ReLU, Swish, Softplus only'),
    (['--resume'], 'state-last.pt not found'),
])
def test_bad_input_exits_2_and_writes_nothing(data_root, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    assert run(TRAIN, tiny(data_root, *extra)) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('extra, message', [(['--epsilon', '1000'], '--epsilon 1000: must be an integer in [0, 255]'),
                                            (['--batch-size', '0'], 'the batch sizes must be >= 1')])
def test_eval_bad_numbers_exit_2(tmp_path, capsys, extra, message):
    assert run(EVAL, ['--out-dir', str(tmp_path), '--device', 'cpu', '--version', 'none'] + extra) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err, err


def test_missing_data_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('core.data.common._download', lambda *a: (_ for _ in ()).throw(OSError('offline')))
    assert run(TRAIN, tiny(tmp_path / 'nowhere')) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: cifar10 ') and 'data not found' in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_a_non_finite_loss_stops_the_run_with_one_line(data_root, tmp_path, monkeypatch, capsys):
    """The original trained on and saved NaN weights as model_best.pth; now the first non-finite loss stops the
    run before its epoch is saved (the same stop as train-wa.py's: one trainer)."""
    monkeypatch.chdir(tmp_path)
    assert run(TRAIN, tiny(data_root, '--lr-max', '1e38', '--fname', 'nan-run')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert 'the training loss is' in err[-1] and '(not finite) with --lr-max 1e+38: stopped' in err[-1]
    assert 'no epoch was completed' in err[-1] and 'Traceback' not in '\n'.join(err)
    folder = os.path.join('trained_models', 'Triangle', 'CIFAR-10', 'nan-run')
    assert not any(f.endswith('.pth') or f == 'state-last.pt' for f in os.listdir(folder))


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_sigterm_mid_epoch_saves_and_the_resume_is_bit_identical(data_root, tmp_path, monkeypatch, capfd, one_thread):
    """The same preemption as train-wa.py's (one trainer): SIGTERM after batch 1 of epoch 1 saves a mid-epoch
    state, exit 143, one line; --resume ends with the uninterrupted run's state."""
    import signal

    import core.training.trainer as trainer_module
    from core.utils import faults
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    for d in (full, cut):
        d.mkdir()
    monkeypatch.chdir(full)
    assert run(TRAIN, tiny(data_root)) == 0
    monkeypatch.chdir(cut)
    pid = os.fork()
    if pid == 0:
        code = 98
        try:
            def fault_point(name, batch=None):
                if name == 'train-batch' and (faults._epoch, batch) == (1, 1):
                    os.kill(os.getpid(), signal.SIGTERM)
            trainer_module.fault_point = fault_point
            code = run(TRAIN, tiny(data_root))
        finally:
            os._exit(code if isinstance(code, int) else 97)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 143
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith('Stopped by SIGTERM at batch 1 of epoch 1: the run is saved in ')
    assert torch.load(os.path.join(FOLDER, 'state-last.pt'), weights_only=True)['partial']['batch'] == 1
    assert run(TRAIN, tiny(data_root, '--resume')) == 0
    a = torch.load(full / FOLDER / 'state-last.pt', weights_only=True)
    b = torch.load(cut / FOLDER / 'state-last.pt', weights_only=True)
    assert a['records'] == b['records'] and a['epoch'] == b['epoch'] == 2
    for k, v in a['trainer']['model'].items():
        assert torch.equal(v, b['trainer']['model'][k]), k

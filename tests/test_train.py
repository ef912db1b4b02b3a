"""train-wa.py end to end (the run's files, resume, flags, DDP) on a tiny WRN-Swish and synthetic 32x32 data made
in tmp_path (helpers in train_helpers.py).

What is checked, against facts written down by hand (not against the code's own output):
- a 2-epoch run writes the reference's files: args.txt keys in the parser's order then `tau`, the CSV
  columns of the reference's stats_adv.csv, checkpoints with exactly the two keys and `module.0.` names, the log lines;
- an existing run folder is refused with exit code 2 and left byte-for-byte untouched;
- a run stopped after epoch 1 and resumed ends with weights equal (torch.equal) to the uninterrupted run;
- --debug trains 1 epoch with the schedule of --num-adv-epochs (OneCycleLR value written out by hand);
- --LSE without --beta exits with 2; --tau 0 trains with the plain Trainer; --amp bf16 runs on CPU;
- the two SGD parameter groups split by the substring `batchnorm` (docs/differences.md item 18);
- a 2-process gloo DDP run via torchrun (slow, ddp).
Bad input, a non-finite loss, SIGKILL + resume, the temporary files and TensorBoard: test_train_robustness.py.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import (
    CSV_COLUMNS,
    REFERENCE_KEYS,
    ROOT,
    SCRIPT,
    assert_same_weights,
    load,
    make_data_dir,
    read_csv,
    run,
    tiny_args,
)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory)


@pytest.mark.slow
def test_two_epoch_run_writes_the_reference_files(data_dir, tmp_path):
    assert run(tiny_args(data_dir, tmp_path, 'run', '--beta', '5', '--LSE', '--ls', '0')) == 0
    run_dir = tmp_path / 'run'
    assert sorted(os.listdir(run_dir)) == ['args.txt', 'curves.png', 'log-train.log', 'state-last.pt',
                                           'state-last.pt.sha256', 'state-prev.pt', 'state-prev.pt.sha256',
                                           'stats_adv.csv', 'weights-best.pt',
                                           'weights-best.pt.sha256', 'weights-last.pt', 'weights-last.pt.sha256']
    args = json.loads((run_dir / 'args.txt').read_text())
    assert list(args)[:len(REFERENCE_KEYS)] == REFERENCE_KEYS
    assert args['attack_eps'] == 8 / 255 and args['clip_value'] == 0 and args['LSE'] is True

    rows = read_csv(run_dir / 'stats_adv.csv')
    assert rows[0] == CSV_COLUMNS
    assert [r[3] for r in rows[1:]] == ['1', '2']
    assert rows[1][6] == ''  # no adversarial test evaluation at epoch 1 (adv_eval_freq 25), one at the last
    assert 0.0 <= float(rows[2][6]) <= 1.0

    for name in ('weights-best.pt', 'weights-last.pt'):
        ckpt = load(run_dir / name)
        assert list(ckpt) == ['model_state_dict', 'unaveraged_model_state_dict']
        for sd in ckpt.values():
            assert all(k.startswith('module.0.') for k in sd)
            assert 'module.0.init_conv.weight' in sd and 'module.0.logits.bias' in sd

    log = (run_dir / 'log-train.log').read_text().splitlines()
    assert log[0] == 'Using device: cpu'
    initial = [line for line in log if line.startswith('Standard Accuracy-\tTest: ')][0]
    assert len(initial.split(': ')[1].rstrip('%.').split('.')[1]) == 6  # the '{:2f}' quirk: 6 decimals
    assert 'RST Adversarial training for 2 epochs' in log
    assert '======= Epoch 2 =======' in log
    assert log[-4:-2] == ['Training completed.', log[-3]] and log[-1] == 'Script Completed.'

    state = load(run_dir / 'state-last.pt')
    assert state['epoch'] == 2 and state['format_version'] == 1
    # global step: the reference's floor(50000 / 16) + 1 = 3126 steps per epoch, plus the 5 batches of epoch 2
    assert state['global_step'] == 3126 + math.ceil(80 / 16)


@pytest.mark.slow
def test_existing_run_is_refused_and_untouched(data_dir, tmp_path, capsys):
    argv = tiny_args(data_dir, tmp_path, 'run', '--num-adv-epochs', '1', data='cifar10')
    assert run(argv) == 0
    run_dir = tmp_path / 'run'
    before = {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir)}
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '--resume' in err and '--overwrite' in err
    assert {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir)} == before
    # --resume of a finished run is refused too; --overwrite first moves the earlier run into previous-<date>/
    # (byte-identical, so a killed new run never pairs old weights with new flags), then runs again in place
    assert run(argv + ['--resume']) == 2
    capsys.readouterr()
    assert run(argv + ['--overwrite']) == 0
    aside = [n for n in os.listdir(run_dir) if n.startswith('previous-')]
    assert len(aside) == 1 and f'were moved to {run_dir / aside[0]}' in capsys.readouterr().out
    assert {n: (run_dir / aside[0] / n).read_bytes() for n in os.listdir(run_dir / aside[0])} == before
    assert sorted(n for n in os.listdir(run_dir) if n != aside[0]) == sorted(before)


@pytest.mark.slow
def test_resume_is_bit_identical(data_dir, tmp_path):
    argv = tiny_args(data_dir, tmp_path, 'full', '--beta', '5', '--adv-eval-freq', '1')
    assert run(argv) == 0
    part = tiny_args(data_dir, tmp_path, 'part', '--beta', '5', '--adv-eval-freq', '1')
    assert run(part + ['--stop-after', '1']) == 0
    assert load(tmp_path / 'part' / 'state-last.pt')['epoch'] == 1
    assert run(part + ['--resume']) == 0
    assert_same_weights(load(tmp_path / 'full' / 'weights-last.pt'), load(tmp_path / 'part' / 'weights-last.pt'))
    assert_same_weights(load(tmp_path / 'full' / 'weights-best.pt'), load(tmp_path / 'part' / 'weights-best.pt'))
    assert (read_csv(tmp_path / 'full' / 'stats_adv.csv', reproducible=True)
            == read_csv(tmp_path / 'part' / 'stats_adv.csv', reproducible=True))


def test_resume_with_other_flags_is_refused(data_dir, tmp_path):
    part = tiny_args(data_dir, tmp_path, 'part', '--num-adv-epochs', '3', data='cifar10')
    assert run(part + ['--stop-after', '1', '--attack-iter', '1']) == 0
    assert run(part + ['--resume', '--attack-iter', '1', '--lr', '0.1']) == 2


def test_debug_trains_one_epoch_with_the_full_schedule(data_dir, tmp_path):
    assert run(tiny_args(data_dir, tmp_path, 'dbg', '--debug', '--num-adv-epochs', '8', '--attack-iter', '1',
                         data='cifar10')) == 0
    rows = read_csv(tmp_path / 'dbg' / 'stats_adv.csv')
    assert rows[0] == [c for c in CSV_COLUMNS if c != 'train_clean_acc']  # Madry without keep-clean
    row = dict(zip(rows[0], rows[1]))
    assert len(rows) == 2 and row['epoch'] == '1'
    assert row['test_adversarial_acc'] != ''  # the last (only) epoch evaluates the test set
    # OneCycleLR(max_lr 0.4, pct_start 0.025, total 8): phase 1 ends at step 0.025 * 8 - 1 = -0.8, so step 0 is
    # in the decay phase at pct = 0.8 / 7.8 (sized for 1 epoch it would be pct = 1, the final 1.6e-6).
    low = 0.4 / 25 / 1e4
    assert float(row['lr']) == pytest.approx(low + (0.4 - low) / 2 * (1 + math.cos(math.pi * 0.8 / 7.8)))


def test_lse_without_beta_is_a_user_error(data_dir, tmp_path, capsys):
    assert run(tiny_args(data_dir, tmp_path, 'x', '--LSE')) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --LSE needs --beta') and err.count('\n') == 1
    assert not (tmp_path / 'x').exists()
    assert run(tiny_args(data_dir, tmp_path, 'x', '--mart')) == 2
    assert run(tiny_args(data_dir, tmp_path, 'x', '--unsup-fraction', '1.5')) == 2
    assert run(tiny_args(data_dir, tmp_path, 'x', '--CutMix')) == 2  # Madry cannot take soft labels
    assert run(tiny_args(data_dir, tmp_path, 'x', '--num-adv-epochs', '40')) == 2  # OneCycleLR 0-length warm-up
    assert run(tiny_args(data_dir, tmp_path, 'x', '--tau', '0', '--beta', '4', '--LSE')) == 2
    assert run(tiny_args(data_dir, tmp_path, 'x', '--device', 'cuda')) == (2 if not torch.cuda.is_available() else 0)
    assert not (tmp_path / 'x').exists() or torch.cuda.is_available()


def test_plain_trainer_with_tau_0(data_dir, tmp_path):
    assert run(tiny_args(data_dir, tmp_path, 'plain', '--tau', '0', '--num-adv-epochs', '1', '--keep-clean', 'true',
                         data='cifar10')) == 0
    ckpt = load(tmp_path / 'plain' / 'weights-last.pt')
    assert list(ckpt) == ['model_state_dict']
    assert read_csv(tmp_path / 'plain' / 'stats_adv.csv')[0] == CSV_COLUMNS


def test_amp_bf16_on_cpu(data_dir, tmp_path):
    assert run(tiny_args(data_dir, tmp_path, 'amp', '--amp', 'bf16', '--num-adv-epochs', '1', '--beta', '6',
                         data='cifar10')) == 0
    rows = read_csv(tmp_path / 'amp' / 'stats_adv.csv')
    assert math.isfinite(float(rows[1][0]))
    assert run(tiny_args(data_dir, tmp_path, 'amp16', '--amp', 'fp16', data='cifar10')) == (
        0 if torch.cuda.is_available() else 2)


def test_parameter_groups_split_by_batchnorm():
    from core.data import get_data_info
    from core.run.parser import parser_train
    from gowal21uncovering.utils.watrain import WATrainer
    args = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-10-1-swish', '--num-adv-epochs', '4'])
    trainer = WATrainer(get_data_info('./data/cifar10s'), args)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay = trainer.optimizer.param_groups
    assert decay['weight_decay'] == 5e-4 and no_decay['weight_decay'] == 0.0
    assert all('batchnorm' not in names[id(p)] for p in decay['params'])
    assert {names[id(p)] for p in no_decay['params']} == {n for n in names.values() if 'batchnorm' in n}
    assert 'module.0.logits.bias' in {names[id(p)] for p in decay['params']}  # biases decayed (differences.md 18)
    # cosinew, E = 4: epoch 1 uses step 0, inside the decay phase (phase 1 ends at 0.025 * 4 - 1 < 0)
    pct = (0 - (0.025 * 4 - 1)) / ((4 - 1) - (0.025 * 4 - 1))
    low = 0.4 / 25 / 1e4
    assert trainer.last_lr() == pytest.approx(low + (0.4 - low) / 2 * (1 + math.cos(math.pi * pct)))
    # update_steps = floor(50000 / 1024) + 1 = 49; warm-up 0.025 * 4 * 49 = 4.9 steps (a float)
    assert trainer.steps_per_epoch == 49 and trainer.ema.warmup_steps == pytest.approx(4.9)


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_gloo_processes(data_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           SCRIPT] + tiny_args(data_dir, tmp_path, 'ddp', '--beta', '5', '--device', 'cpu', '--tensorboard')
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / 'ddp'
    assert sorted(os.listdir(run_dir)) == ['args.txt', 'curves.png', 'log-train.log', 'state-last.pt',
                                           'state-last.pt.sha256', 'state-prev.pt', 'state-prev.pt.sha256',
                                           'stats_adv.csv', 'tensorboard', 'weights-best.pt',
                                           'weights-best.pt.sha256', 'weights-last.pt', 'weights-last.pt.sha256']
    assert len(os.listdir(run_dir / 'tensorboard')) == 1  # one event file: rank 0 only
    log = (run_dir / 'log-train.log').read_text()
    assert log.count('======= Epoch 1 =======') == 1  # only rank 0 logs
    ckpt = load(run_dir / 'weights-last.pt')
    assert all(k.startswith('module.0.') for k in ckpt['model_state_dict'])
    assert read_csv(run_dir / 'stats_adv.csv')[0] == CSV_COLUMNS


def test_pretrained_file_initialises_model_and_averaged_model(tmp_path):
    """--pretrained-file: weights-best.pt's model_state_dict lands in BOTH networks (the reference crashed, #17)."""
    from core.data import get_data_info
    from core.run.parser import parser_train
    from gowal21uncovering.utils.watrain import WATrainer
    info = get_data_info('./data/cifar10s')
    flags = ['--model', 'wrn-10-1-swish', '--num-adv-epochs', '4', '--log-dir', str(tmp_path)]
    source = WATrainer(info, parser_train().parse_args(['--desc', 'src', '--seed', '3'] + flags))
    os.makedirs(tmp_path / 'src')
    torch.save(source.weights(), tmp_path / 'src' / 'weights-best.pt')
    trainer = WATrainer(info, parser_train().parse_args(['--desc', 'dst', '--pretrained-file', 'src'] + flags))
    expected = source.wa_model.state_dict()
    for net in (trainer.model, trainer.wa_model):
        got = net.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    fresh = WATrainer(info, parser_train().parse_args(['--desc', 'dst'] + flags))
    assert not torch.equal(fresh.model.state_dict()['module.0.init_conv.weight'],
                           expected['module.0.init_conv.weight'])


@pytest.mark.slow
@pytest.mark.ddp
def test_a_dead_ddp_worker_stops_the_others_with_one_line_and_the_run_resumes(data_dir, tmp_path):
    """Rank 1 SIGKILLed after batch 2 of epoch 2: rank 0's next collective fails; it prints one line and exits
    within the time limit instead of hanging (collectives also time out: SCORE_DDP_TIMEOUT_S); --resume finishes."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT, SCORE_AT_FAULT='train-batch:2:2@1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29519',
           SCRIPT] + tiny_args(data_dir, tmp_path, 'ddp', '--beta', '5', data='cifar10')
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'error: another process of this torchrun job stopped (' in out.stderr, out.stderr[-3000:]
    assert load(tmp_path / 'ddp' / 'state-last.pt')['epoch'] == 1
    del env['SCORE_AT_FAULT']
    out = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert load(tmp_path / 'ddp' / 'state-last.pt')['epoch'] == 2

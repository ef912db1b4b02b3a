"""train-wa.py end to end on a tiny WRN-Swish and synthetic 32x32 data made in tmp_path.

What is checked, against facts written down by hand (not against the code's own output):
- a 2-epoch run writes the reference's files: args.txt keys in the parser's order then `tau`, the CSV
  columns of the reference's stats_adv.csv, checkpoints with exactly the two keys and `module.0.` names, the log lines;
- an existing run folder is refused with exit code 2 and left byte-for-byte untouched;
- a run stopped after epoch 1 and resumed ends with weights equal (torch.equal) to the uninterrupted run;
- --debug trains 1 epoch with the schedule of --num-adv-epochs (OneCycleLR value written out by hand);
- --LSE without --beta exits with 2; --tau 0 trains with the plain Trainer; --amp bf16 runs on CPU;
- the two SGD parameter groups split by the substring `batchnorm` (docs/differences.md item 18);
- a 2-process gloo DDP run via torchrun (slow, ddp).
"""
import csv
import json
import math
import os
import re
import runpy
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from script_runner import run_script
from synthetic import random_images, write_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train-wa.py')

REFERENCE_KEYS = ['augment', 'batch_size', 'batch_size_validation', 'data_dir', 'log_dir', 'data', 'desc', 'model',
                  'normalize', 'pretrained_file', 'num_adv_epochs', 'adv_eval_freq', 'beta', 'lr', 'weight_decay',
                  'scheduler', 'nesterov', 'clip_grad', 'attack', 'attack_eps', 'attack_step', 'attack_iter',
                  'keep_clean', 'debug', 'mart', 'unsup_fraction', 'aux_data_filename', 'seed', 'LSE', 'ls',
                  'clip_value', 'CutMix', 'tau']
CSV_COLUMNS = ['train_loss', 'train_clean_acc', 'train_adversarial_acc', 'epoch', 'lr', 'test_clean_acc',
               'test_adversarial_acc', 'eval_adversarial_acc']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """./data/cifar10/{train,test}.npz (80 and 32 random images) and a 64-image generated-data file."""
    root = tmp_path_factory.mktemp('data')
    image, label = random_images(write_cifar10(root, 80, 32), 64)
    np.savez(root / 'aux.npz', image=image, label=label)
    return root


def tiny_args(data_dir, log_dir, desc, *extra, data='cifar10s'):
    args = ['--device', 'cpu', '--data-dir', str(data_dir), '--log-dir', str(log_dir), '--desc', desc, '--data', data,
            '--model', 'wrn-10-1-swish', '--batch-size', '16', '--batch-size-validation', '16',
            '--num-adv-epochs', '2', '--attack-iter', '1', '--num-workers', '0', '--validation-size', '16']
    if data.endswith('s'):
        args += ['--aux-data-filename', str(data_dir / 'aux.npz')]
    return args + list(extra)


def run(argv):
    """Run train-wa.py in this process; returns its exit code (0 when main returns)."""
    return run_script(SCRIPT, argv)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for key in a:
        assert list(a[key]) == list(b[key])
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


@pytest.mark.slow
def test_two_epoch_run_writes_the_reference_files(data_dir, tmp_path):
    assert run(tiny_args(data_dir, tmp_path, 'run', '--beta', '5', '--LSE', '--ls', '0')) == 0
    run_dir = tmp_path / 'run'
    assert sorted(os.listdir(run_dir)) == ['args.txt', 'curves.png', 'log-train.log', 'state-last.pt',
                                           'stats_adv.csv', 'weights-best.pt', 'weights-last.pt']
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
    # --resume of a finished run is refused too, and --overwrite runs again in place
    assert run(argv + ['--resume']) == 2
    assert run(argv + ['--overwrite']) == 0
    assert sorted(os.listdir(run_dir)) == sorted(before)


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
    assert read_csv(tmp_path / 'full' / 'stats_adv.csv') == read_csv(tmp_path / 'part' / 'stats_adv.csv')


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
    from core.utils.parser import parser_train
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
                                           'stats_adv.csv', 'tensorboard', 'weights-best.pt', 'weights-last.pt']
    assert len(os.listdir(run_dir / 'tensorboard')) == 1  # one event file: rank 0 only
    log = (run_dir / 'log-train.log').read_text()
    assert log.count('======= Epoch 1 =======') == 1  # only rank 0 logs
    ckpt = load(run_dir / 'weights-last.pt')
    assert all(k.startswith('module.0.') for k in ckpt['model_state_dict'])
    assert read_csv(run_dir / 'stats_adv.csv')[0] == CSV_COLUMNS


def test_pretrained_file_initialises_model_and_averaged_model(tmp_path):
    """--pretrained-file: weights-best.pt's model_state_dict lands in BOTH networks (the reference crashed, #17)."""
    from core.data import get_data_info
    from core.utils.parser import parser_train
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


BAD_NUMBERS = [('--attack-eps', '-1'), ('--attack-eps', 'nan'), ('--attack-step', '0'), ('--attack-iter', '0'),
               ('--lr', 'nan'), ('--lr', '0'), ('--lr', 'inf'), ('--weight-decay', '-0.0001'), ('--beta', '-1'),
               ('--beta', 'nan'), ('--clip_value', '-0.5'), ('--ls', '1'), ('--ls', '-0.1'), ('--tau', '1'),
               ('--tau', '-0.5'), ('--clip-grad', '0'), ('--seed', '-1'), ('--unsup-fraction', 'nan'),
               ('--stop-after', '0')]


@pytest.mark.parametrize('flag,value', BAD_NUMBERS, ids=[f'{f}={v}' for f, v in BAD_NUMBERS])
def test_bad_numeric_flag_one_line_exit_2_nothing_written(data_dir, tmp_path, capsys, flag, value):
    """Each numeric flag out of range: one line naming the flag, exit 2, no run folder (not even the log root)."""
    log_dir = tmp_path / 'logs'
    assert run(tiny_args(data_dir, log_dir, 'x', flag, value)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {flag} ') and err.count('\n') == 1, err
    assert not log_dir.exists()


def test_non_finite_loss_stops_keeps_the_last_epoch_and_resumes_with_another_lr(data_dir, tmp_path, capsys):
    """A loss that blows up stops the run (one line: epoch, batch), the files of epoch 1 stay byte-identical, and
    --resume --resume-changed-flags lr --lr X continues with the schedule of X (OneCycleLR written out by hand)."""
    argv = tiny_args(data_dir, tmp_path, 'nan', '--num-adv-epochs', '3', '--lr', '0.1', data='cifar10')
    assert run(argv + ['--stop-after', '1']) == 0
    run_dir = tmp_path / 'nan'
    names = ('weights-best.pt', 'weights-last.pt', 'stats_adv.csv', 'state-last.pt', 'args.txt')
    kept = {n: (run_dir / n).read_bytes() for n in names}
    capsys.readouterr()
    assert run(argv + ['--resume', '--lr', '1e30']) == 2                     # not on purpose: refused, with the fix
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'for lr' in err and '--resume-changed-flags lr' in err
    assert run(argv + ['--resume', '--resume-changed-flags', 'lr', '--lr', '1e30']) == 2
    err = capsys.readouterr().err.split('\r')[-1]                           # after the (cleared) progress bar
    assert err.count('\n') == 1 and re.match(r'error: epoch 2, batch [1-4] of 4: the training loss is (nan|inf) ', err)
    assert 'still holds epoch 1' in err and '--resume --resume-changed-flags lr' in err
    assert {n: (run_dir / n).read_bytes() for n in names} == kept
    assert 'epoch 2, batch' in (run_dir / 'log-train.log').read_text()
    assert run(argv + ['--resume', '--resume-changed-flags', 'lr', '--lr', '0.05']) == 0
    lrs = [float(r[CSV_COLUMNS.index('lr') - 1]) for r in read_csv(run_dir / 'stats_adv.csv')[1:]]
    assert json.loads((run_dir / 'args.txt').read_text())['lr'] == 0.05 == load(run_dir / 'state-last.pt')['args']['lr']

    def one_cycle(max_lr, step, total=3):        # cosinew: OneCycleLR(pct_start 0.025), annealing phase
        start = 0.025 * total - 1
        low = max_lr / 25 / 1e4
        return low + (max_lr - low) / 2 * (1 + math.cos(math.pi * (step - start) / (total - 1 - start)))
    assert lrs[0] == pytest.approx(one_cycle(0.1, 0), rel=1e-12)
    assert lrs[1:] == pytest.approx([one_cycle(0.05, 1), one_cycle(0.05, 2)], rel=1e-12)


def run_killed(argv, fault):
    """Run train-wa.py in a forked child with SCORE_AT_FAULT=fault; assert that it SIGKILLed itself there."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, whatever happens
        code = 98
        try:
            os.environ['SCORE_AT_FAULT'] = fault
            code = run(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (fault, status)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_killed_at_any_point_resume_ends_bit_identical(data_dir, tmp_path, one_thread):
    """SIGKILL (no cleanup) in the middle of a file write, in the middle of an epoch and between two writes:
    each --resume continues from the last state-last.pt (the commit point; before the first one, from epoch 1)
    and the run ends with the weights and the CSV of the uninterrupted run."""
    flags = ('--beta', '5', '--adv-eval-freq', '1')
    assert run(tiny_args(data_dir, tmp_path, 'full', *flags, data='cifar10')) == 0
    argv = tiny_args(data_dir, tmp_path, 'killed', *flags, data='cifar10')
    run_killed(argv, 'mid-write:weights-last.pt:1')      # epoch 1 not committed: weights-best.pt + a temp file
    run_dir = tmp_path / 'killed'
    assert not (run_dir / 'state-last.pt').exists() and any(n.endswith('.tmp') for n in os.listdir(run_dir))
    resume = argv + ['--resume']
    run_killed(resume, 'train-batch:2:2')               # restarted at epoch 1, committed it, killed in epoch 2
    assert load(run_dir / 'state-last.pt')['epoch'] == 1
    run_killed(resume, 'after-write:stats_adv.csv:2')   # epoch 2's weights and CSV written, its state not
    assert len(read_csv(run_dir / 'stats_adv.csv')) == 3 and load(run_dir / 'state-last.pt')['epoch'] == 1
    run_killed(resume, 'mid-write:state-last.pt:2')     # the state of epoch 2 written to a temp file only
    assert run(resume) == 0
    for name in ('weights-last.pt', 'weights-best.pt'):
        assert_same_weights(load(tmp_path / 'full' / name), load(run_dir / name))
    assert read_csv(tmp_path / 'full' / 'stats_adv.csv') == read_csv(run_dir / 'stats_adv.csv')
    assert load(run_dir / 'state-last.pt')['epoch'] == 2
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(tmp_path / 'full'))   # no temp file left


def test_stale_temp_files_are_exactly_the_temporary_files_of_write_atomic(tmp_path):
    """A killed write_atomic leaves `.<name>.XXXXXXXX.tmp` (mkstemp's 8 characters): --resume removes those of the
    run's files, and nothing else (not a user's file, not another target's temporary file)."""
    from core.utils.atomic import write_atomic
    from core.utils.run_dir import RUN_FILES, STALE_TEMP_FILES, remove_stale_temp_files
    temp_names = []

    def record_temp_name(f):
        temp_names.extend(n for n in os.listdir(tmp_path) if n.endswith('.tmp'))
    for name in RUN_FILES:
        write_atomic(tmp_path / name, record_temp_name)
    assert len(temp_names) == len(RUN_FILES) == 6
    assert all(STALE_TEMP_FILES.match(n) for n in temp_names), temp_names
    kept = ['stats_adv.csv', 'notes.tmp', 'stats_adv.csv.tmp', '.args.txt.tmp', '.args.txt.abcdefg.tmp',
            '.args.txt.abcdefghi.tmp', '.other.pt.abcdefgh.tmp', 'args.txt.abcdefgh.tmp', '.args.txt.ABCDEFGH.tmp']
    stale = ['.args.txt.abcdefgh.tmp', '.state-last.pt.a1_b2c3d.tmp', '.curves.png.00000000.tmp']
    folder = tmp_path / 'run'
    folder.mkdir()
    for name in kept + stale:
        (folder / name).write_bytes(b'')
    assert remove_stale_temp_files(folder) == sorted(stale)
    assert sorted(os.listdir(folder)) == sorted(kept)


def test_csv_and_args_bytes(tmp_path):
    """stats_adv.csv: pandas' CSV (header, no index, empty cell for ''); args.txt: JSON with indent 4."""
    import argparse

    from core.utils.epoch import write_csv
    from core.utils.run_dir import write_args
    rows = [{'epoch': 1, 'lr': 0.5, 'test_adversarial_acc': ''}, {'epoch': 2, 'lr': 0.25, 'test_adversarial_acc': 1.0}]
    write_csv(rows, str(tmp_path / 'stats_adv.csv'))
    assert (tmp_path / 'stats_adv.csv').read_bytes() == b'epoch,lr,test_adversarial_acc\n1,0.5,\n2,0.25,1.0\n'
    write_args(argparse.Namespace(desc='x', lr=0.1, resume_changed_flags=[]), str(tmp_path))
    assert (tmp_path / 'args.txt').read_bytes() == (b'{\n    "desc": "x",\n    "lr": 0.1,\n'
                                                   b'    "resume_changed_flags": []\n}')
    assert sorted(os.listdir(tmp_path)) == ['args.txt', 'stats_adv.csv']


def test_negative_unsup_fraction_passes_the_flag_checks(data_dir, tmp_path):
    """--unsup-fraction -1 (one merged pool, the sampler's test in test_data.py) is no longer refused."""
    from core.utils.parser import check_train_flags as validate
    from core.utils.parser import parser_train
    validate(parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--unsup-fraction', '-1')))
    args = parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--resume-changed-flags', 'lr'))
    with pytest.raises(Exception, match='add --resume'):
        validate(args)
    args = parser_train().parse_args(tiny_args(data_dir, tmp_path, 'x', '--resume', '--resume-changed-flags', 'beta'))
    with pytest.raises(Exception, match='only lr may change'):
        validate(args)


def test_dataparallel_note_only_for_one_process_on_several_gpus():
    from core.utils.distributed import Runtime
    note = runpy.run_path(SCRIPT)['dataparallel_note']
    cuda = torch.device('cuda')
    assert note(Runtime(device=cuda), 4) == (
        'Note: 4 GPUs are visible but this run uses one; the reference wrapped the model in DataParallel over all '
        'of them (BatchNorm statistics per batch/4 images): `torchrun --nproc_per_node 4 train-wa.py ...` '
        'reproduces that.')
    assert note(Runtime(device=cuda), 1) is None                            # one GPU: nothing to say
    assert note(Runtime(device=cuda, rank=0, world_size=4), 4) is None      # already under torchrun
    assert note(Runtime(device=torch.device('cpu')), 0) is None


def tensorboard_scalars(folder):
    """{tag: [(step, value), ...]} of every event file in `folder` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


def test_tensorboard_steps_and_resume(data_dir, tmp_path, one_thread):
    """--tensorboard: per-step train scalars at steps 1..2L (L batches per epoch), per-epoch ones at L and 2L, with
    a stop after epoch 1 and a resume continuing the same curves."""
    pytest.importorskip('tensorboard')  # optional; requirements.txt installs it
    argv = tiny_args(data_dir, tmp_path, 'tb', '--beta', '5', '--adv-eval-freq', '2', '--tensorboard', data='cifar10')
    assert run(argv + ['--stop-after', '1']) == 0
    assert run(argv + ['--resume']) == 0
    scalars = tensorboard_scalars(tmp_path / 'tb' / 'tensorboard')
    header, *rows = read_csv(tmp_path / 'tb' / 'stats_adv.csv')
    steps = 4  # 80 training images - 16 for validation = 64 = 4 batches of 16 per epoch
    assert [s for s, _ in scalars['train/loss']] == list(range(1, 2 * steps + 1))  # each step once, in order
    assert {'train/loss', 'train/clean_acc', 'train/adversarial_acc', 'train/lr'} <= set(scalars)
    for column in ('train_loss', 'lr', 'test_clean_acc', 'eval_adversarial_acc'):
        assert [s for s, _ in scalars[f'epoch/{column}']] == [steps, 2 * steps]
        assert [v for _, v in scalars[f'epoch/{column}']] == pytest.approx([float(r[header.index(column)])
                                                                            for r in rows])
    assert [s for s, _ in scalars['epoch/test_adversarial_acc']] == [2 * steps]  # attacked at epoch 2 only
    # the per-epoch train loss is the mean of the per-step losses
    losses = [v for _, v in scalars['train/loss']]
    assert scalars['epoch/train_loss'][0][1] == pytest.approx(sum(losses[:steps]) / steps, rel=1e-6)
    assert scalars['train/lr'][0][1] == pytest.approx(float(rows[0][header.index('lr')]))


def test_tensorboard_missing_is_one_line_before_anything_is_written(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)  # as if the package were not installed
    assert run(tiny_args(data_dir, tmp_path, 'tb', '--tensorboard', data='cifar10')) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'pip install tensorboard' in err
    assert not (tmp_path / 'tb').exists()

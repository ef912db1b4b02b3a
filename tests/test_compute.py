"""Compute accounting (core/utils/compute.py) against counts made by hand."""
import pytest
import torch

from core.utils.compute import Meter, count_flops, device_peak, format_line, precision


def test_a_linear_layer_costs_what_the_matmuls_cost():
    """y = x W^T for x (B, 5), W (3, 5): the forward is 2*B*5*3 FLOPs; the backward computes dL/dx (2*B*3*5) and
    dL/dW (2*3*B*5), so one training step is three times the forward."""
    layer = torch.nn.Linear(5, 3, bias=False)
    x = torch.randn(4, 5, requires_grad=True)
    forward, _ = count_flops(layer, x)
    assert forward == 2 * 4 * 5 * 3
    step, _ = count_flops(lambda: layer(x).sum().backward())
    assert step == 3 * 2 * 4 * 5 * 3


def test_meter_figures_follow_from_each_other():
    meter = Meter(flop_per_image=1e6, peak=1e9, world_size=2)
    m = meter.epoch(images=500, seconds=2.0, epochs_done=1, epochs_total=4)
    assert m['images_per_s'] == 250
    assert m['flops_per_s'] == pytest.approx(m['images_per_s'] * m['flop_per_image'])
    assert m['mfu'] == pytest.approx(2.5e8 / 2e9)          # against both processes' peak
    assert m['device_hours'] == pytest.approx(4 / 3600)      # 2 s on 2 devices
    assert m['eta_s'] == pytest.approx(6.0)                  # 3 more epochs at 2 s
    m2 = meter.epoch(images=500, seconds=4.0, epochs_done=2, epochs_total=4)
    assert m2['elapsed_s'] == 6.0 and m2['eta_s'] == pytest.approx(6.0)
    assert 'MFU 12.50%' in format_line(m)


def test_the_cpu_peak_is_a_measured_matmul_rate_and_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    peak, label = device_peak('cpu')
    assert torch.equal(torch.rand(3), expected)
    assert peak > 0 and label == 'cpu fp32 matmul, measured'
    assert precision('cpu', 'bf16') == 'bf16' and precision('cpu') == 'fp32'


def trainer(iters, *extra):
    from core.data import get_data_info
    from core.run.parser import parser_train
    from core.training.builder import build_trainer
    args = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-10-1-swish', '--attack-iter', str(iters),
                                      '--beta', '5.0'] + list(extra))
    return build_trainer(get_data_info('./data/cifar10s'), args)


def batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]


def test_counting_a_step_changes_nothing_of_the_run(one_thread):
    """A trainer that counts its FLOPs first trains bit for bit as one that does not."""
    from core.training.cost import flop_per_image
    plain = trainer(2)   # the builder seeds, so each trainer starts the same stream
    plain.train(batches(), epoch=1)
    counted = trainer(2)
    (x, y), _ = batches()
    assert flop_per_image(counted, x, y) > 0
    counted.train(batches(), epoch=1)
    for a, b in zip(plain.state_dict()['model'].values(), counted.state_dict()['model'].values()):
        assert torch.equal(a, b)


def test_each_attack_step_costs_the_same(one_thread):
    """FLOPs per image are affine in the number of attack steps T: T forwards and input backwards plus a fixed part."""
    from core.training.cost import flop_per_image
    (x, y), _ = batches()
    f1, f2, f3 = (flop_per_image(trainer(t), x, y) for t in (1, 2, 3))
    assert f1 < f2 < f3 and f3 - f2 == pytest.approx(f2 - f1, rel=1e-9)


@pytest.mark.slow
def test_throughput_bench_prints_its_figures_on_the_cpu():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, 'bench/throughput.py', '--model', 'wrn-10-1-swish', '--batch-size', '16',
                          '--steps', '2', '--device', 'cpu'], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'FLOP per image' in out.stdout and 'images/s' in out.stdout and 'MFU' in out.stdout
    assert out.stdout.count('device-hours') == 2


@pytest.mark.slow
def test_a_run_accounts_for_its_compute_as_the_bench_counts_it(tmp_path, one_thread):
    """train-wa.py's four columns follow from each other, MFU is a fraction, and the FLOPs per image are the ones
    bench/throughput.py counts for the same setting (they do not depend on the batch or its values)."""
    import csv
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))
    import throughput
    from script_runner import run_script
    from synthetic import write_cifar10
    from train_helpers import SCRIPT
    write_cifar10(tmp_path, 40, 16)
    argv = ['--device', 'cpu', '--data-dir', tmp_path, '--log-dir', tmp_path / 'logs', '--desc', 'c', '--data',
            'cifar10', '--model', 'wrn-10-1-swish', '--batch-size', '8', '--batch-size-validation', '16',
            '--num-adv-epochs', '1', '--attack-iter', '1', '--num-workers', '0', '--validation-size', '8',
            '--scheduler', 'step', '--beta', '6.0', '--ls', '0.1']
    assert run_script(SCRIPT, argv) == 0
    with open(tmp_path / 'logs' / 'c' / 'stats_adv.csv') as f:
        row = next(csv.DictReader(f))
    ips, fpi, fps, mfu = (float(row[k]) for k in ('images_per_s', 'flop_per_image', 'flops_per_s', 'mfu'))
    assert fps == pytest.approx(ips * fpi, rel=1e-9) and 0 < mfu <= 1
    bench = throughput.trainer_for('wrn-10-1-swish', 8, 1, ['--beta', '6.0', '--ls', '0.1'], 'cpu', 'none', False,
                                   False)
    from core.training.cost import flop_per_image
    assert flop_per_image(bench, torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))) == fpi
    log = (tmp_path / 'logs' / 'c' / 'log-train.log').read_text()
    assert 'FLOP per training image' in log and 'MFU' in log and 'device-hours of training in all' in log

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

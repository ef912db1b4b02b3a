"""What a run costs: FLOPs (torch.utils.flop_counter), the device's peak, MFU (nanoGPT's estimate_mfu), the ETA."""
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.utils.utils import format_time

# Datasheet dense peak FLOP/s by a substring of the device name; the first match wins (PCIe before SXM names).
PEAKS = (
    ('H100 PCIe', {'fp32': 51.2e12, 'tf32': 378e12, 'bf16': 756e12, 'fp16': 756e12}),
    ('H100', {'fp32': 67e12, 'tf32': 494.7e12, 'bf16': 989.4e12, 'fp16': 989.4e12}),
    ('H200', {'fp32': 67e12, 'tf32': 494.7e12, 'bf16': 989.4e12, 'fp16': 989.4e12}),
    ('A100', {'fp32': 19.5e12, 'tf32': 156e12, 'bf16': 312e12, 'fp16': 312e12}),
    ('L40S', {'fp32': 91.6e12, 'tf32': 183e12, 'bf16': 362e12, 'fp16': 362e12}),
    ('L4', {'fp32': 30.3e12, 'tf32': 60e12, 'bf16': 121e12, 'fp16': 121e12}),
    ('A10', {'fp32': 31.2e12, 'tf32': 62.5e12, 'bf16': 125e12, 'fp16': 125e12}),
    ('V100', {'fp32': 15.7e12, 'tf32': 15.7e12, 'fp16': 125e12}),
)


class _NoModuleTracking:
    """FlopCounterMode's per-module hooks break the attacks' torch.autograd.grad (pytorch issue 131753)."""
    parents = {'Global'}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(fn, *args, **kwargs):
    """(FLOPs that `fn(*args, **kwargs)` runs, forward and backward, its result)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), out


def precision(device, amp='none'):
    """The matmul/conv arithmetic: the autocast dtype, else tf32 where cuDNN allows it (its default), else fp32."""
    if amp in ('bf16', 'fp16'):
        return amp
    if torch.device(device).type == 'cuda' and torch.backends.cudnn.allow_tf32:
        return 'tf32'
    return 'fp32'


def timed(fn, device):
    """Seconds `fn()` takes, the device synchronised before and after on CUDA."""
    cuda = torch.device(device).type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def matmul_probe(device, dtype=torch.float32, n=1024, seconds=0.5):
    """Measured matmul FLOP/s of `device` (2 n^3 per product), best of repeated timings over about `seconds`."""
    a = torch.randn(n, n, device=device).to(dtype)
    best = float('inf')
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or best == float('inf'):
        best = min(best, timed(lambda: a @ a, a.device))
    return 2 * n ** 3 / best


def device_peak(device, amp='none'):
    """(peak FLOP/s, label): a known GPU's datasheet peak, else a matmul probe whose draws leave the run's RNG alone."""
    device = torch.device(device)
    prec = precision(device, amp)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAKS:
            if key in name and prec in peaks:
                return peaks[prec], f'{key} {prec} datasheet peak'
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(prec, torch.float32)
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        return matmul_probe(device, dtype), f'{device.type} {prec} matmul, measured'


class Meter:
    """Per-epoch compute accounting: images/s over all processes, achieved FLOP/s, MFU, device-hours, ETA."""

    def __init__(self, flop_per_image, peak, world_size=1, seconds_so_far=0.0, images_so_far=0):
        self.flop_per_image, self.peak, self.world_size = flop_per_image, peak, world_size
        # training wall time and images of the earlier epochs (a resumed run continues them)
        self.seconds, self.images = seconds_so_far, images_so_far

    def epoch(self, images, seconds, epochs_done, epochs_total):
        """The figures of one epoch of `images` training images (all processes) in `seconds` of wall time."""
        self.seconds += seconds
        self.images += images
        images_per_s = images / max(seconds, 1e-9)
        flops_per_s = images_per_s * self.flop_per_image
        left = self.seconds / max(epochs_done, 1) * (epochs_total - epochs_done)
        return {'images_per_s': images_per_s, 'flop_per_image': self.flop_per_image, 'flops_per_s': flops_per_s,
                'mfu': flops_per_s / (self.peak * self.world_size), 'elapsed_s': self.seconds,
                'device_hours': self.seconds * self.world_size / 3600, 'eta_s': left}


def format_line(m):
    """The log line of `Meter.epoch`'s figures."""
    return ('Compute-\t{:.1f} images/s, {:.3g} FLOP/image, {:.3g} FLOP/s, MFU {:.2%}; {:.2f} device-hours so far, '
            '{} to go.').format(m['images_per_s'], m['flop_per_image'], m['flops_per_s'], m['mfu'],
                                m['device_hours'], format_time(m['eta_s']))

#!/usr/bin/env python3
"""GPU acceptance check: the CUDA paths of train-wa.py and eval-aa.py, one PASS / FAIL / SKIP row per check."""
import argparse
import csv
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.attacks.trades import ctx_batch_stats  # noqa: E402
from core.attacks.utils import input_gradient  # noqa: E402
from core.data import get_data_info  # noqa: E402
from core.losses.divergences import kl_div_batchmean, squared_error_sum  # noqa: E402
from core.models import create_model  # noqa: E402
from core.utils.compute import timed  # noqa: E402

CUDA = torch.cuda.is_available()
NO_CUDA = 'no CUDA device'


class Skip(Exception):
    """A check that cannot run here; its message says why."""


def make_data(root, n_train, n_test):
    """cifar10/{train,test}.npz: class = one of 10 colours + uniform noise (learnable in one or two epochs)."""
    rng = np.random.RandomState(0)
    colours = rng.randint(104, 152, (10, 1, 1, 3))  # close enough for an 8/255 attack to flip some
    os.makedirs(os.path.join(root, 'cifar10'), exist_ok=True)
    for split, n in (('train', n_train), ('test', n_test)):
        labels = rng.randint(0, 10, n)
        images = np.clip(colours[labels] + rng.randint(-40, 41, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        np.savez(os.path.join(root, 'cifar10', f'{split}.npz'), image=images, label=labels.astype(np.int64))
    return root


def run_script(argv, env=None):
    proc = subprocess.run([sys.executable] + argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})),
                          capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def train(ctx, desc, *flags, epochs=2, env=None, launcher=()):
    argv = [*launcher, os.path.join(ROOT, 'train-wa.py'), '--data-dir', ctx.data, '--log-dir', ctx.logs, '--desc', desc,
            '--data', 'cifar10', '--model', ctx.model, '--batch-size', str(ctx.batch), '--batch-size-validation',
            str(ctx.batch), '--num-adv-epochs', str(epochs), '--attack-iter', str(ctx.iters), '--num-workers', '0',
            '--validation-size', str(ctx.batch), '--beta', '6'] + list(flags)
    code, out = run_script(argv, env)
    if code != 0:
        raise AssertionError(f'train-wa.py exit {code}: {out.strip().splitlines()[-1] if out.strip() else ""}')
    with open(os.path.join(ctx.logs, desc, 'stats_adv.csv')) as f:
        rows = list(csv.DictReader(f))
    return rows, out


def grad_check(ctx, dtype):
    """Autocast input gradients vs float32: zeros and sign agreement (fp16 underflowed, docs/differences.md item 47)."""
    device = ctx.device
    torch.manual_seed(0)
    model = create_model(ctx.grad_model, False, get_data_info('./data/cifar10'), device)
    x = torch.rand(ctx.grad_batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (ctx.grad_batch,), device=device)
    with ctx_batch_stats(model), torch.no_grad():
        p = F.softmax(model(x), dim=1)
    z = (x + torch.empty_like(x).uniform_(-8 / 255, 8 / 255)).clamp(0, 1)
    objectives = {'kl': lambda lg: kl_div_batchmean(p, lg), 'lse': lambda lg: squared_error_sum(p, lg),
                  'ce': lambda lg: F.cross_entropy(lg, y),
                  'kl-sum': lambda lg: F.kl_div(F.log_softmax(lg, dim=1), p, reduction='sum')}
    parts, min_agree = [], 0.97 if dtype == torch.float16 else 0.9
    with ctx_batch_stats(model):
        for name, objective in objectives.items():
            reference = input_gradient(model, objective, z)
            with torch.autocast(device.type, dtype=dtype):
                grad = input_gradient(model, objective, z)
            zeros = (grad == 0).float().mean().item()
            agree = (grad.sign() == reference.sign()).float().mean().item()
            parts.append(f'{name} 0s {zeros:.3f} agree {agree:.3f}')
            assert torch.isfinite(grad).all() and zeros < 0.01 and agree > min_agree, '; '.join(parts)
    return f'{device.type}, ' + '; '.join(parts)


def train_check(ctx, desc, *flags, env=None, launcher=()):
    """A 2-epoch train-wa.py run: finite loss, train adversarial accuracy below clean (CPU: <=; --quick: noise)."""
    rows, out = train(ctx, desc, '--device', ctx.device.type, *flags, env=env, launcher=launcher)
    last, order = rows[-1], None if ctx.quick else '<' if CUDA else '<='
    loss, clean, adv = float(last['train_loss']), float(last['train_clean_acc']), float(last['train_adversarial_acc'])
    assert math.isfinite(loss), f'loss {loss}'
    ok = {'<': adv < clean, '<=': adv <= clean, None: True}[order]
    assert ok, f'train adversarial accuracy {adv:.3f} not {order} clean {clean:.3f}'
    detail = f'loss {loss:.4f}, train clean {clean:.3f}, adversarial {adv:.3f}'
    if env and 'TORCH_LOGS' in env:
        detail += f', {len(re.findall("Recompiling function", out))} recompiles'
    return detail


def resume_check(ctx, device, resume_device):
    """Stop after epoch 1, resume (possibly on another device), compare with the uninterrupted run."""
    tag = f'{device}-{resume_device}'
    full, part = f'full-{tag}', f'part-{tag}'
    train(ctx, full, '--device', device)
    train(ctx, part, '--device', device, '--stop-after', '1')
    train(ctx, part, '--device', resume_device, '--resume')
    a, b = (torch.load(os.path.join(ctx.logs, d, 'weights-last.pt'), weights_only=True)['model_state_dict']
            for d in (full, part))  # no map_location
    diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(a.values(), b.values()))
    if device == resume_device == 'cpu':
        assert diff == 0.0, f'CPU resume not bit-identical (max |diff| {diff:.3g})'
    assert math.isfinite(diff)
    return f'{device} -> {resume_device}: max |w_resumed - w_full| = {diff:.3g}'


def eval_counts(ctx, desc, device):
    code, out = run_script([os.path.join(ROOT, 'eval-aa.py'), '--data-dir', ctx.data, '--log-dir', ctx.logs,
                            '--desc', desc, '--version', 'custom', '--num-samples', str(ctx.eval_n),
                            '--device', device, '--n-iter', str(ctx.eval_iter)])
    assert code == 0, out.strip().splitlines()[-1]
    m = re.search(r'Clean accuracy: ([\d.]+)%, robust accuracy: ([\d.]+)%', out)
    return [round(float(v) * ctx.eval_n / 100) for v in m.groups()]


def eval_check(ctx):
    """eval-aa.py --version custom on CUDA and on CPU: equal counts +- 1 image."""
    desc = 'eval-src'
    if not os.path.isdir(os.path.join(ctx.logs, desc)):
        train(ctx, desc, '--device', ctx.device.type, epochs=1)
    cpu = eval_counts(ctx, desc, 'cpu')
    if not CUDA:
        return f'cpu: clean {cpu[0]}, robust {cpu[1]} of {ctx.eval_n} (CUDA comparison skipped: {NO_CUDA})'
    gpu = eval_counts(ctx, desc, 'cuda')
    assert all(abs(a - b) <= 1 for a, b in zip(cpu, gpu)), f'cpu {cpu} vs cuda {gpu}'
    return f'clean/robust of {ctx.eval_n}: cuda {gpu}, cpu {cpu}'


def step_bench(ctx, rounds=3):
    """Images/s and peak memory of a wrn-28-10-swish step at batch 512, three settings alternately, vs fp32."""
    if not CUDA:
        raise Skip(NO_CUDA)
    from core.training.composites import trades_loss, trades_loss_LSE
    device, batch = torch.device('cuda'), 512
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    settings = {'fp32': (None, False, False), 'bf16+cl': (torch.bfloat16, True, False), 'compiled': (None, False, True)}
    rows = []
    for name, fn in (('TRADES-KL', trades_loss), ('SCORE-LSE', trades_loss_LSE)):
        models, times, peaks = {}, {k: [] for k in settings}, {}
        for key, (_, cl, comp) in settings.items():
            torch.manual_seed(0)
            m = create_model('wrn-28-10-swish', False, get_data_info('./data/cifar10'), device)
            if cl:
                m = m.to(memory_format=torch.channels_last)
            models[key] = torch.compile(m) if comp else m

        def step(key, fn=fn, models=models):
            dtype, cl, _ = settings[key]
            xb = x.contiguous(memory_format=torch.channels_last) if cl else x
            with torch.autocast('cuda', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss, _ = fn(models[key], xb, y, step_size=2 / 255, epsilon=8 / 255, perturb_steps=10, beta=6.0)
            loss.backward()
        for key in settings:  # warm-up (and compilation)
            step(key)
        for _ in range(rounds):
            for key in settings:
                torch.cuda.reset_peak_memory_stats()
                times[key].append(timed(lambda key=key: step(key), device))
                peaks[key] = torch.cuda.max_memory_allocated() / 2 ** 30
        base = min(times['fp32'])
        rows.append(f'{name}: fp32 {batch / base:.0f} img/s {peaks["fp32"]:.1f} GiB; ' + ', '.join(
            f'{k} x{base / min(times[k]):.2f} speed, {peaks[k]:.1f} GiB' for k in settings if k != 'fp32'))
    return ' | '.join(rows)


def ddp_check(ctx, *flags):
    if torch.cuda.device_count() < 2:
        raise Skip('fewer than 2 GPUs')
    desc = 'ddp' + ''.join(flags).replace('-', '_')
    return train_check(ctx, desc, *flags, launcher=('-m', 'torch.distributed.run', '--nproc_per_node', '2'))


def checks(ctx):
    """(name, reason to skip or None, function) in running order; a function returns its detail or raises."""
    cuda, full, dev = None if CUDA else NO_CUDA, '--quick' if ctx.quick else None, ctx.device.type
    return [
        ('grad-fp16', None, lambda: grad_check(ctx, torch.float16)),
        ('grad-bf16', full, lambda: grad_check(ctx, torch.bfloat16)),
        ('train-fp32', None, lambda: train_check(ctx, 'fp32')),
        ('train-bf16', full, lambda: train_check(ctx, 'bf16', '--amp', 'bf16')),
        ('train-fp16', cuda, lambda: train_check(ctx, 'fp16', '--amp', 'fp16')),
        ('train-channels-last', full, lambda: train_check(ctx, 'cl', '--channels-last')),
        ('train-compile', cuda, lambda: train_check(ctx, 'compile', '--compile', env={'TORCH_LOGS': 'recompiles'})),
        ('train-mart-tau0', full, lambda: train_check(ctx, 'mart', '--mart', '--tau', '0')),
        ('resume-' + dev, full, lambda: resume_check(ctx, dev, dev)),
        ('resume-cuda-to-cpu', cuda, lambda: resume_check(ctx, 'cuda', 'cpu')),
        ('eval-aa', full, lambda: eval_check(ctx)),
        ('step-wrn-28-10', full, lambda: step_bench(ctx)),
        ('ddp-nccl', full, lambda: ddp_check(ctx)),
        ('ddp-nccl-sync-bn', full, lambda: ddp_check(ctx, '--sync-bn')),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='the gradient check and one tiny training run only')
    parser.add_argument('--work-dir', default=None, help='folder for the synthetic data and the runs (default: a new '
                        'temporary folder, left in place and printed at the end)')
    args = parser.parse_args(argv)
    ctx = argparse.Namespace(quick=args.quick, device=torch.device('cuda' if CUDA else 'cpu'))
    if args.quick:
        ctx.model, ctx.batch, ctx.iters, ctx.grad_model, ctx.grad_batch = 'wrn-10-1-swish', 16, 1, 'wrn-10-1-swish', 16
        n_train, n_test = 32, 16
        if not CUDA:  # a test runs this on shared CPU cores
            torch.set_num_threads(1)
            os.environ['OMP_NUM_THREADS'] = '1'
    else:
        ctx.model, ctx.batch, ctx.iters = ('wrn-16-2-swish', 128, 3) if CUDA else ('wrn-10-1-swish', 32, 2)
        ctx.grad_model, ctx.grad_batch = 'wrn-10-2-swish', 512 if CUDA else 64
        n_train, n_test = (2048, 512) if CUDA else (128, 64)
    ctx.eval_n, ctx.eval_iter = min(200, n_test), 10
    work = args.work_dir or tempfile.mkdtemp(prefix='gpu-check-')
    ctx.data, ctx.logs = make_data(os.path.join(work, 'data'), n_train, n_test), os.path.join(work, 'logs')
    print(f'gpu_check: torch {torch.__version__}, CUDA {"yes: " + torch.cuda.get_device_name() if CUDA else "no"}, '
          f'{torch.cuda.device_count()} GPU(s), work folder {work}', flush=True)
    failed, width = 0, 22
    print(f'{"check":<{width}} {"result":<6} {"seconds":>7}  detail')
    for name, skip, fn in checks(ctx):
        start = time.time()
        try:
            if skip:
                raise Skip(skip)
            status, detail = 'PASS', fn()
        except Skip as e:
            status, detail = 'SKIP', str(e)
        except Exception as e:  # noqa: BLE001 - every failure is reported in the table
            status, detail = 'FAIL', f'{type(e).__name__}: {e}'
            failed += 1
        print(f'{name:<{width}} {status:<6} {time.time() - start:7.1f}  {detail}', flush=True)
    print(f'Runs and data are in {work}.')
    print(f'{failed} check(s) failed.' if failed else 'All checks that could run here passed.')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

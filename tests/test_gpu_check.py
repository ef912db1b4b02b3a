"""bench/gpu_check.py --quick runs here: the CPU parts pass, every CUDA check is listed as skipped, exit 0."""
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_quick_runs_the_cpu_parts_and_says_what_it_skipped(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'gpu_check.py'), '--quick', '--work-dir',
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[2:] if line.split()[1:2]
            and line.split()[1] in ('PASS', 'FAIL', 'SKIP')}
    assert rows['grad-fp16'] == 'PASS' and rows['train-fp32'] == 'PASS'
    assert 'FAIL' not in rows.values() and len(rows) == 14
    if not torch.cuda.is_available():
        for name in ('train-fp16', 'train-compile', 'resume-cuda-to-cpu'):
            assert rows[name] == 'SKIP'
        assert proc.stdout.count('no CUDA device') == 3

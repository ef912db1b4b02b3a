"""Peak memory and throughput of the cifar10s training loader on a synthetic .npz of --size generated images."""
import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.data import load_data, set_epoch  # noqa: E402
from core.data.convert import _write_member  # noqa: E402


def rss_mib(field='VmRSS'):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def write_synthetic(path, n, num_classes=10, chunk=8192, seed=0):
    """Stream n random 32x32x3 uint8 images and labels into an uncompressed npz (never n images in RAM)."""
    import zipfile
    rng = np.random.default_rng(seed)
    chunks = (rng.integers(0, 256, (min(chunk, n - i), 32, 32, 3), dtype=np.uint8).tobytes()
              for i in range(0, n, chunk))
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED, allowZip64=True) as z:
        _write_member(z, 'image', (n, 32, 32, 3), np.uint8, chunks)
        _write_member(z, 'label', (n,), np.int64, [rng.integers(0, num_classes, n).astype(np.int64).tobytes()])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=1_000_000, help='generated images in the synthetic .npz')
    p.add_argument('--batches', type=int, default=50, help='training batches to draw')
    p.add_argument('--batch-size', type=int, default=512)
    p.add_argument('--unsup-fraction', type=float, default=0.7)
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers (the reference uses 4)')
    p.add_argument('--data-dir', default='./data', help='root holding cifar10/ (train.npz, test.npz or torchvision)')
    p.add_argument('--aux-dir', default=None, help='folder for the synthetic .npz (default: a temporary folder)')
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix='bench-data-')
    aux_dir = args.aux_dir or tmp
    os.makedirs(aux_dir, exist_ok=True)
    aux = os.path.join(aux_dir, f'synthetic_{args.size}.npz')
    try:
        if not os.path.exists(aux):
            need = args.size * 3072 * 1.05
            free = shutil.disk_usage(aux_dir).free
            if free < need:
                sys.exit(f'error: {aux_dir} has {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed')
            t = time.time()
            write_synthetic(aux, args.size)
            print(f'wrote {aux} ({os.path.getsize(aux) / 2**30:.2f} GiB) in {time.time() - t:.0f} s')
        base = os.path.join(args.data_dir, 'cifar10')
        if os.path.exists(os.path.join(base, 'train.npz')) or os.path.isdir(os.path.join(base, 'cifar-10-batches-py')):
            root = args.data_dir
            print(f'base data: {base}')
        else:
            root = os.path.join(tmp, 'data')
            os.makedirs(os.path.join(root, 'cifar10'))
            for split, n in (('train', 50_000), ('test', 10_000)):
                write_synthetic(os.path.join(root, 'cifar10', f'{split}.npz'), n, seed=1 if split == 'train' else 2)
            print(f'base data: synthetic 50,000 + 10,000 images in {root}/cifar10')

        baseline = rss_mib()
        exact_peak = reset_peak()
        t0 = time.time()
        _, _, _, train_loader, _, _ = load_data(
            os.path.join(root, 'cifar10s'), batch_size=args.batch_size, num_workers=args.workers,
            use_augmentation=True, aux_data_filename=aux, unsup_fraction=args.unsup_fraction, validation=True)
        t_build = time.time() - t0
        set_epoch(train_loader, 0)
        it = iter(train_loader)
        t1 = time.time()
        n_images, first = 0, None
        for b in range(min(args.batches, len(train_loader))):
            x, y = next(it)
            n_images += len(y)
            if b == 0:
                first = time.time() - t1
                t2 = time.time()
        elapsed = time.time() - t1
        steady = (n_images - args.batch_size) / max(time.time() - t2, 1e-9)
        del it
        peak = rss_mib('VmHWM') if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f'generated images: {args.size:,}; batches: {b + 1} x {args.batch_size} '
              f'(unsup fraction {args.unsup_fraction}); workers: {args.workers}; cpus: {os.cpu_count()}')
        print(f'loader built in {t_build:.1f} s; first batch after {first:.2f} s')
        print(f'baseline RSS: {baseline:.0f} MiB')
        print(f'peak RSS:     {peak:.0f} MiB{"" if exact_peak else " (ru_maxrss: process lifetime)"}')
        print(f'difference:   {peak - baseline:.0f} MiB (the reference: ~{2 * args.size * 3072 / 2 ** 20:.0f} MiB)')
        if args.workers:
            print(f'largest child-process peak RSS: {child:.0f} MiB (workers share the parent\'s pages)')
        print(f'throughput:   {n_images / elapsed:.0f} images/s overall, {steady:.0f} images/s after the first batch')
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)  # only the temporary folder this script made


if __name__ == '__main__':
    main()

"""Shared by tests/test_without_ddpm.py and tests/test_without_ddpm_training.py: the scripts' paths and
without_DDPM/train_cifar.py imported as a module."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'without_DDPM', 'train_cifar.py')
EVAL = os.path.join(ROOT, 'without_DDPM', 'eval_cifar.py')
sys.path.insert(0, os.path.join(ROOT, 'without_DDPM'))
import train_cifar  # noqa: E402

__all__ = ['ROOT', 'TRAIN', 'EVAL', 'train_cifar']

"""Tests run on the CPU (every script they start gets `--device cpu`); tests marked `cuda` need a GPU and are
skipped, with the reason shown by `-ra`, on a machine without one."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none available)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)

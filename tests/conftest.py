"""Fixtures shared by several test modules. Tests run on the CPU (every script they start gets
`--device cpu`); tests marked `cuda` need a GPU and are skipped, with the reason shown by `-ra`, on a machine
without one."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread during the test: tiny models run faster, a busy machine is not oversubscribed, forked
    children do not enter an OpenMP team created by the parent, and runs compared bit for bit use one thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none available)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)

"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread during the test: tiny models run faster, and a busy machine is not oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""A fixture for test modules whose workloads are tiny (8x8 digits, small CNNs): run them on
one intra-op thread. On a small shared CI machine, OpenMP's spinning threads make tiny
kernels many times slower than one thread does; the results do not depend on it."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""Suite-wide settings.

The models in the tests are tiny: one intra-op thread is faster than several for them, and the
suite runs as two worker processes (pytest-xdist, ``make test``) that share the machine's 2 cores.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

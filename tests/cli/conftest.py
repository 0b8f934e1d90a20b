import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: one thread is faster than two, and far faster on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

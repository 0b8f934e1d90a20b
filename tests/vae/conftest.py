"""The VAE tests use tiny tensors: one intra-op thread is as fast and avoids spinning threads on a busy CPU."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

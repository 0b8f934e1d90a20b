"""Each rank's RNG states in a checkpoint: every rank gets its own stream back; a run with another number of ranks
gets distinct streams and a warning that it is no longer an exact continuation."""

import random

import numpy as np
import pytest
import torch

from dalle2_pytorch.trainers.checkpoint import capture_rng_state, rank_rng_states, restore_rank_rng_state


def draws():
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_each_rank_continues_its_own_stream():
    states, expected = [], []
    for rank in range(3):  # three "ranks", each seeded differently, as a run seeds them
        torch.manual_seed(100 + rank)
        random.seed(100 + rank)
        np.random.seed(100 + rank)
        states.append(capture_rng_state())
        expected.append(draws())
    tensors, meta = rank_rng_states(states)
    assert meta["rng_world_size"] == 3 and sorted(meta["rng_ranks"]) == ["1", "2"]
    assert "rng.torch" in tensors and "rng.rank2.torch" in tensors
    for rank in (2, 0, 1):
        torch.manual_seed(0)
        restore_rank_rng_state(tensors, meta, rank, 3)
        assert draws() == expected[rank]


def test_another_number_of_ranks_warns_and_keeps_the_ranks_apart():
    torch.manual_seed(7)
    tensors, meta = rank_rng_states([capture_rng_state()])   # written by one process
    with pytest.warns(RuntimeWarning, match="saved by 1 process"):
        restore_rank_rng_state(tensors, meta, 0, 2)
    first = draws()
    with pytest.warns(RuntimeWarning):
        restore_rank_rng_state(tensors, meta, 1, 2)
    assert draws() != first

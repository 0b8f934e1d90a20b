"""The diversity figure: generated spread per caption over the real spread of that caption."""

import torch

from dalle2_pytorch.eval.folder import diversity_ratio, mean_pairwise_distance


def test_mean_pairwise_distance_and_the_ratio():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert abs(mean_pairwise_distance(points) - 5 / 2 ** 0.5) < 1e-9
    real = {"a": torch.tensor([[0.0, 0.0], [2.0, 0.0]]), "b": torch.tensor([[0.0], [4.0]]), "c": torch.zeros(1, 1)}
    made = {"a": torch.tensor([[0.0, 0.0], [1.0, 0.0]]), "b": torch.tensor([[0.0], [4.0]]), "c": torch.ones(2, 1)}
    assert diversity_ratio(made, real) == (0.5 + 1.0) / 2     # c has one real image: left out
    assert diversity_ratio({"a": torch.zeros(2, 2)}, real) == 0.0
    assert diversity_ratio({"z": torch.zeros(2, 2)}, real) is None

"""Per-row generators: a row's noise does not depend on the rows it is batched with."""

import pytest
import torch

from dalle2_pytorch.diffusion import ModelDenoiser, NoiseSchedule, RowGenerators, randn, sample_loop
from tests.diffusion.analytic import gaussian_denoiser, vp_model_from_ve


def test_row_generators_draw_each_row_as_if_alone():
    batched = randn((3 * 2, 4), generator=RowGenerators.from_seeds([1, 2, 3]))
    for row, seed in enumerate((1, 2, 3)):
        alone = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(batched[2 * row:2 * row + 2], alone)


def test_row_generators_refuse_draws_they_cannot_split():
    with pytest.raises(ValueError, match="divisible by the 2 rows"):
        randn((3, 4), generator=RowGenerators.from_seeds([1, 2]))
    with pytest.raises(TypeError):
        RowGenerators([])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_with_row_generators_is_batch_independent(sampler):
    sched = NoiseSchedule("cosine", 50)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched), sched, "x0")
    both = sample_loop(den, (2, 3), sampler=sampler, steps=10, generator=RowGenerators.from_seeds([5, 9]))
    alone = sample_loop(den, (1, 3), sampler=sampler, steps=10, generator=RowGenerators.from_seeds([9]))
    torch.testing.assert_close(both[1:], alone)

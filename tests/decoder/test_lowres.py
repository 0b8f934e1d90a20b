"""Low-resolution conditioning: resize, blur augmentation, Imagen noise augmentation, paired crops."""

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.decoder import LowresConditioner, gaussian_blur2d, random_crop_pair, resize_image_to


def _checkerboard(size: int = 16) -> torch.Tensor:
    idx = torch.arange(size)
    board = ((idx[:, None] + idx[None, :]) % 2).float() * 2 - 1
    return board.expand(2, 3, size, size).clone()


def test_gaussian_blur_matches_a_direct_2d_convolution_and_keeps_constants():
    torch.manual_seed(0)
    image = torch.randn(2, 3, 12, 12)
    blurred = gaussian_blur2d(image, 5, 1.3)
    coords = torch.arange(5) - 2.0
    g = torch.exp(-coords ** 2 / (2 * 1.3 ** 2))
    kernel = torch.outer(g, g) / torch.outer(g, g).sum()
    padded = F.pad(image, (2, 2, 2, 2), mode="reflect")
    direct = F.conv2d(padded, kernel.expand(3, 1, 5, 5), groups=3)
    torch.testing.assert_close(blurred, direct, atol=1e-5, rtol=0)
    constant = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(gaussian_blur2d(constant, 3, 0.6), constant)


def test_training_condition_is_downsampled_then_grown_back():
    conditioner = LowresConditioner(use_blur=False)
    board = _checkerboard(16)
    cond, levels = conditioner(board, target_image_size=16, downsample_image_size=8)
    assert levels is None
    torch.testing.assert_close(cond, resize_image_to(resize_image_to(board, 8), 16))
    no_down = LowresConditioner(use_blur=False, downsample_first=False)
    assert torch.equal(no_down(board, target_image_size=16, downsample_image_size=8)[0], board)


def test_blur_probability_is_per_sample():
    board = _checkerboard(8)[:1].repeat(64, 1, 1, 1)
    never = LowresConditioner(blur_prob=0.0, downsample_first=False)
    assert torch.equal(never(board, target_image_size=8)[0], board)
    always = LowresConditioner(blur_prob=1.0, downsample_first=False)
    assert (always(board, target_image_size=8)[0] - board).abs().amax(dim=(1, 2, 3)).min() > 0.1
    half = LowresConditioner(blur_prob=0.5, downsample_first=False)
    changed = (half(board, target_image_size=8, generator=torch.Generator().manual_seed(0))[0] != board)
    fraction = changed.flatten(1).any(1).float().mean().item()
    assert 0.25 < fraction < 0.75


def test_blur_ranges_are_drawn_and_bad_values_rejected():
    conditioner = LowresConditioner(blur_sigma=(0.4, 0.8), blur_kernel_size=(3, 6), blur_prob=1.0)
    gen = torch.Generator().manual_seed(0)
    draws = [conditioner._draw_blur(gen) for _ in range(50)]
    assert {k for k, _ in draws} == {3, 5}
    assert all(0.4 <= s <= 0.8 for _, s in draws)
    for kwargs in (dict(blur_kernel_size=4), dict(blur_sigma=0.0), dict(blur_sigma=(0.8, 0.4)), dict(blur_prob=1.5)):
        with pytest.raises(ValueError):
            LowresConditioner(**kwargs)


@pytest.mark.parametrize("size", [1, (1, 1), (1, 2)])
def test_a_blur_kernel_of_one_pixel_is_accepted_and_leaves_the_image_as_it_is(size):
    conditioner = LowresConditioner(blur_kernel_size=size, blur_prob=1.0, downsample_first=False)
    board = _checkerboard(8)
    torch.testing.assert_close(conditioner(board, target_image_size=8)[0], board)


@pytest.mark.parametrize("size", [(2, 2), (4, 4), (6, 6)])
def test_a_blur_kernel_range_without_an_odd_size_is_rejected(size):
    with pytest.raises(ValueError, match="contains an odd size"):
        LowresConditioner(blur_kernel_size=size)


def test_noise_augmentation_levels_and_fixed_sampling_level():
    conditioner = LowresConditioner(use_blur=False, use_noise=True)
    image = torch.zeros(256, 3, 4, 4)
    noised, levels = conditioner(image, target_image_size=4, generator=torch.Generator().manual_seed(0))
    assert levels.dtype == torch.long and 0 <= levels.min() and levels.max() < 1000 and levels.unique().numel() > 50
    expected_std = conditioner.noise_schedule.sqrt_one_minus_alphas_cumprod[levels]
    measured_std = noised.flatten(1).std(dim=1)
    assert (measured_std - expected_std).abs().mean() < 0.15
    cond, fixed = conditioner.for_sampling(image[:2], target_image_size=8, noise_level=0.2)
    assert cond.shape == (2, 3, 8, 8) and fixed.tolist() == [200, 200]
    for level, step in ((0.0, 0), (0.9991, 999), (0.99999, 999)):  # every level in [0, 1) has its own step
        assert conditioner.for_sampling(image[:1], target_image_size=4, noise_level=level)[1].tolist() == [step]
    clean, none = LowresConditioner().for_sampling(image[:2], target_image_size=8, noise_level=0.2)
    assert none is None and torch.equal(clean, torch.zeros(2, 3, 8, 8))


def test_random_crop_takes_the_same_window_from_target_and_condition():
    torch.manual_seed(0)
    target = torch.randn(8, 3, 16, 16)
    target_crop, cond_crop = random_crop_pair(target, target * 2 + 1, 8)
    assert target_crop.shape == (8, 3, 8, 8)
    torch.testing.assert_close(cond_crop, target_crop * 2 + 1)
    windows = {tuple(c[0, 0, 0].tolist()) for c in target_crop.unsqueeze(1)}
    assert len(windows) > 1   # each sample gets its own window
    with pytest.raises(ValueError, match="random_crop_size"):
        random_crop_pair(target, None, 32)

"""Coloured squares and discs on a black background, drawn in the test (no files, no downloads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PALETTE = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]],
                       dtype=torch.float32)


def coloured_shapes(n: int, size: int, generator: torch.Generator, shapes_per_image: int = 1) -> torch.Tensor:
    """(n, 3, size, size) images in [-1, 1]: each holds ``shapes_per_image`` squares/discs in palette colours."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.full((n, 3, size, size), -1.0)
    for i in range(n):
        for _ in range(shapes_per_image):
            colour = PALETTE[torch.randint(0, len(PALETTE), (1,), generator=generator)].view(3, 1, 1)
            cx, cy = torch.randint(2, size - 2, (2,), generator=generator).tolist()
            radius = torch.randint(size // 6, size // 3, (1,), generator=generator).item()
            if torch.rand(1, generator=generator).item() < 0.5:
                mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
            else:
                mask = ((xs - cx).abs() <= radius) & ((ys - cy).abs() <= radius)
            images[i] = torch.where(mask, colour, images[i])
    return images


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak range 2)."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).mean()
    return (10 * torch.log10(4 / mse)).item()


def box_blurred(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Average over ``factor``x``factor`` blocks, then bilinear upsampling back: a blurred-input baseline."""
    return F.interpolate(F.avg_pool2d(images, factor), scale_factor=factor, mode="bilinear")

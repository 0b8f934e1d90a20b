"""Changing resolution inside the U-Net: down/upsampling layers, the multi-scale cross-embed conv,
and the combiner that gathers every up-stage's output at full resolution (U-Net² style)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block


class Downsample(nn.Module):
    """Halve the resolution with a 2×2, stride-2 convolution.

    This is exactly the "SP-conv" of https://arxiv.org/abs/2208.03641 (pixel-unshuffle followed by
    a 1×1 conv), written as one strided conv so no unshuffled copy of the map is made.
    """

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CrossEmbedLayer(nn.Module):
    """Parallel convs of several kernel sizes (CrossFormer) whose outputs are concatenated.

    Larger kernels get fewer channels: dim_out/2, dim_out/4, ... and the remainder for the last.
    """

    def __init__(self, dim_in: int, dim_out: int, *, kernel_sizes: Sequence[int], stride: int):
        super().__init__()
        kernel_sizes = sorted(kernel_sizes)
        if any(k % 2 != stride % 2 for k in kernel_sizes):
            raise ValueError(f"cross-embed kernel sizes {tuple(kernel_sizes)} must all be "
                             f"{'even' if stride % 2 == 0 else 'odd'} for stride {stride}")
        widths = [int(dim_out / 2 ** i) for i in range(1, len(kernel_sizes))]
        widths.append(dim_out - sum(widths))
        self.convs = nn.ModuleList(nn.Conv2d(dim_in, width, k, stride=stride, padding=(k - stride) // 2)
                                   for k, width in zip(kernel_sizes, widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv in self.convs], dim=1)


class PixelShuffleUpsample(nn.Module):
    """Double the resolution: 1×1 conv to 4× channels, SiLU, pixel shuffle.

    The four sub-pixel kernels start identical (ICNR-like init), so the layer begins as a
    nearest-neighbour upsample and produces no checkerboard artefacts (arXiv:1707.02937).
    """

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out * 4, 1)
        kernel = torch.empty(dim_out, dim, 1, 1)
        nn.init.kaiming_uniform_(kernel)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.repeat_interleave(4, dim=0))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.silu(self.conv(x)), 2)


class NearestUpsample(nn.Module):
    """Double the resolution: nearest-neighbour upsample then a 3×3 conv."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _keys_cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5."""
    ax = x.abs()
    inner = (1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
    outer = (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return inner + outer


def cubic_upsample_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) matrix of bicubic upsampling along one axis (half-pixel centres,
    zero padding outside the map), the interpolation used by the reference's ``resize_image_to``."""
    if out_size < in_size:
        raise ValueError(f"cubic_upsample_matrix only enlarges; got {in_size} -> {out_size}")
    scale = out_size / in_size
    eps = torch.finfo(torch.float32).eps
    centres = (torch.arange(out_size, dtype=torch.float64) / scale
               + (in_size - 1) / 2 - (out_size - 1) / (2 * scale))
    taps = torch.ceil(centres - 2 - eps).long()[:, None] + torch.arange(4)
    weights = _keys_cubic(centres[:, None] - taps)
    weights = weights / weights.sum(dim=1, keepdim=True)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    inside = (taps >= 0) & (taps < in_size)
    rows = torch.arange(out_size)[:, None].expand_as(taps)
    matrix.index_put_((rows[inside], taps[inside]), weights[inside], accumulate=True)
    return matrix


def cubic_upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling of a (b, c, h, w) map to ``size`` = (height, width)."""
    height, width = size
    if x.shape[-2:] == (height, width):
        return x
    rows = cubic_upsample_matrix(x.shape[-2], height).to(device=x.device, dtype=x.dtype)
    cols = cubic_upsample_matrix(x.shape[-1], width).to(device=x.device, dtype=x.dtype)
    return rows @ x @ cols.T


class UpsampleCombiner(nn.Module):
    """Resize every up-stage's output to the final resolution, pass each through a Block, and
    concatenate them to the final feature map (the reference's "U-Net squared" combiner)."""

    def __init__(self, dim_ins: Sequence[int], dim_out: int):
        super().__init__()
        self.fmap_convs = nn.ModuleList(Block(dim_in, dim_out) for dim_in in dim_ins)
        self.extra_channels = dim_out * len(dim_ins)

    def forward(self, x: torch.Tensor, fmaps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        outs = [conv(cubic_upsample(fmap, size)) for fmap, conv in zip(fmaps, self.fmap_convs)]
        return torch.cat((x, *outs), dim=1)

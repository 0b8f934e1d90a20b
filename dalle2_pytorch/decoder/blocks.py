"""The U-Net's building blocks.

* ``Block`` (conv → GroupNorm → FiLM → SiLU) and ``ResnetBlock`` (two blocks, optional cross-attention).
* Changing resolution: ``Downsample``, the upsamplers, the multi-scale ``CrossEmbedLayer`` conv, and the
  ``UpsampleCombiner`` that gathers every up level's output at full resolution (U-Net² style).
* One resolution level of the U-Net on the way down (``DownLevel``) and up (``UpLevel``): a down level runs
  an initial resnet block, ``num_resnet_blocks`` cross-attending resnet blocks and an optional attention
  layer, pushing every block's output (not the initial one's) and the attention output onto the skip
  stack; the matching up level pops one skip before each of its blocks.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import CrossAttention
from .layers import WeightStandardizedConv2d


def _norm_film_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                    scale: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
    x = F.group_norm(x, groups, weight, bias, eps)
    if scale is not None:
        x = torch.addcmul(shift, x, scale + 1)
    return F.silu(x)


class Block(nn.Module):
    """3×3 conv, GroupNorm, optional FiLM ``x * (scale + 1) + shift`` from the time embedding, SiLU.

    With ``recompute_norm`` (the default; see :func:`set_norm_recompute`), while gradients are recorded
    the norm/FiLM/SiLU tail is recomputed in the backward pass instead of storing its two extra full-size
    intermediate maps: the same gradients for less activation memory, at the cost of a few elementwise ops.
    """

    def __init__(self, dim: int, dim_out: int, *, groups: int = 8, weight_standardization: bool = False,
                 recompute_norm: bool = True):
        super().__init__()
        if dim_out % groups:
            raise ValueError(f"resnet_groups={groups} must divide the block width {dim_out}")
        conv = WeightStandardizedConv2d if weight_standardization else nn.Conv2d
        self.project = conv(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.recompute_norm = recompute_norm

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.project(x)
        scale, shift = scale_shift if scale_shift is not None else (None, None)
        args = (x, self.norm.weight, self.norm.bias, self.norm.num_groups, self.norm.eps, scale, shift)
        if self.recompute_norm and torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(_norm_film_silu, *args, use_reentrant=False)
        return _norm_film_silu(*args)


class ResnetBlock(nn.Module):
    """Two Blocks with a residual connection; the first is FiLM-modulated by the time embedding and,
    when ``cond_dim`` is given, followed by cross-attention to the conditioning tokens."""

    def __init__(self, dim: int, dim_out: int, *, time_cond_dim: int, cond_dim: int | None = None,
                 groups: int = 8, weight_standardization: bool = False, cosine_sim_cross_attn: bool = False):
        super().__init__()
        self.time_mlp = nn.Linear(time_cond_dim, dim_out * 2)
        self.cross_attn = (CrossAttention(dim_out, context_dim=cond_dim, cosine_sim=cosine_sim_cross_attn)
                           if cond_dim is not None else None)
        self.block1 = Block(dim, dim_out, groups=groups, weight_standardization=weight_standardization)
        self.block2 = Block(dim_out, dim_out, groups=groups, weight_standardization=weight_standardization)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.time_mlp(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, (scale, shift))
        if self.cross_attn is not None:
            b, c, hgt, wid = h.shape
            seq = h.flatten(2).transpose(1, 2)
            h = h + self.cross_attn(seq, cond).transpose(1, 2).reshape(b, c, hgt, wid)
        return self.block2(h) + self.res_conv(x)


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


class Conv4x4Downsample(nn.Module):
    """Halve the resolution with a 4×4, stride-2, padding-1 convolution (reference releases up to 1.9.x)."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvTransposeUpsample(nn.Module):
    """Double the resolution with a 4×4, stride-2 transposed convolution (reference releases 0.15-0.20)."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim_out, 4, stride=2, padding=1)

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
    """Resize every up-level's output to the final resolution, pass each through a Block, and
    concatenate them to the final feature map (the reference's "U-Net squared" combiner)."""

    def __init__(self, dim_ins: Sequence[int], dim_out: int):
        super().__init__()
        self.fmap_convs = nn.ModuleList(Block(dim_in, dim_out) for dim_in in dim_ins)
        self.extra_channels = dim_out * len(dim_ins)

    def forward(self, x: torch.Tensor, fmaps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        outs = [conv(cubic_upsample(fmap, size)) for fmap, conv in zip(fmaps, self.fmap_convs)]
        return torch.cat((x, *outs), dim=1)


def set_norm_recompute(module: nn.Module, enabled: bool) -> None:
    """Switch the backward-pass recomputation of every :class:`Block`'s norm/FiLM/SiLU tail inside ``module``
    (a memory saving; outputs and gradients are the same either way)."""
    for block in module.modules():
        if isinstance(block, Block):
            block.recompute_norm = bool(enabled)


Runner = Callable[..., torch.Tensor]  # calls a layer directly or through gradient checkpointing


def run_direct(layer: nn.Module, *args) -> torch.Tensor:
    return layer(*args)


def run_checkpointed(layer: nn.Module, *args) -> torch.Tensor:
    return checkpoint(layer, *args, use_reentrant=False)


class DownLevel(nn.Module):
    def __init__(self, *, downsample_in: nn.Module | None, init_block: nn.Module, blocks: list[nn.Module],
                 attn: nn.Module | None, to_next_stage: nn.Module):
        super().__init__()
        self.downsample_in = downsample_in      # memory-efficient U-Net: downsample before the blocks
        self.init_block = init_block
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.to_next_stage = to_next_stage      # downsample, or a 1×1 conv where the resolution stays

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor, cond: torch.Tensor,
                skips: list[torch.Tensor], run: Runner) -> torch.Tensor:
        if self.downsample_in is not None:
            x = self.downsample_in(x)
        x = run(self.init_block, x, time_cond)
        for block in self.blocks:
            x = run(block, x, time_cond, cond)
            skips.append(x)
        if self.attn is not None:
            x = run(self.attn, x)
        skips.append(x)
        return self.to_next_stage(x)


class UpLevel(nn.Module):
    def __init__(self, *, init_block: nn.Module, blocks: list[nn.Module], attn: nn.Module | None,
                 upsample: nn.Module | None, skip_scale: float):
        super().__init__()
        self.init_block = init_block
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.upsample = upsample
        self.skip_scale = skip_scale

    def _with_skip(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        skip = skips.pop()
        return torch.cat((x, skip * self.skip_scale if self.skip_scale != 1 else skip), dim=1)

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor, cond: torch.Tensor,
                skips: list[torch.Tensor], run: Runner) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (input of the next level, this level's output before upsampling)."""
        x = run(self.init_block, self._with_skip(x, skips), time_cond, cond)
        for block in self.blocks:
            x = run(block, self._with_skip(x, skips), time_cond, cond)
        if self.attn is not None:
            x = run(self.attn, x)
        return (self.upsample(x) if self.upsample is not None else x), x

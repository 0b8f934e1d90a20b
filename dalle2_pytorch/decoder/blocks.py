"""Convolutional building blocks: ``Block`` (conv → GroupNorm → FiLM → SiLU) and ``ResnetBlock``."""

from __future__ import annotations

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

    While gradients are recorded, the cheap norm/FiLM/SiLU tail is recomputed in the backward pass
    instead of storing its three full-size intermediate maps: the same gradients for about half the
    activation memory of a block, at the cost of a few elementwise ops.
    """

    def __init__(self, dim: int, dim_out: int, *, groups: int = 8, weight_standardization: bool = False):
        super().__init__()
        if dim_out % groups:
            raise ValueError(f"resnet_groups={groups} must divide the block width {dim_out}")
        conv = WeightStandardizedConv2d if weight_standardization else nn.Conv2d
        self.project = conv(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.project(x)
        scale, shift = scale_shift if scale_shift is not None else (None, None)
        args = (x, self.norm.weight, self.norm.bias, self.norm.num_groups, self.norm.eps, scale, shift)
        if torch.is_grad_enabled() and x.requires_grad:
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

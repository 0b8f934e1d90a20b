"""Small layers shared by the U-Net: norms without bias, weight-standardised conv, time embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _norm_eps(x: torch.Tensor) -> float:
    # half precision cannot represent 1e-5 next to typical variances; use a larger epsilon there
    return 1e-5 if x.dtype in (torch.float32, torch.float64) else 1e-3


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a gain and no bias (as in the reference attention blocks)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, None, _norm_eps(x))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of a (b, c, h, w) map, gain only."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + _norm_eps(x)).rsqrt() * self.weight.view(1, -1, 1, 1)


class WeightStandardizedConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel (https://arxiv.org/abs/1903.10520).

    It works well together with GroupNorm; the stored weight stays unnormalised.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), unbiased=False, keepdim=True)
        weight = (self.weight - mean) * (var + _norm_eps(x)).rsqrt()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def sinusoidal_embedding(values: torch.Tensor, dim: int) -> torch.Tensor:
    """(b,) float positions (timesteps, noise levels) -> (b, dim) [sin | cos] features."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32)
                      * (-math.log(10000) / (half - 1)))
    angles = values.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class SinusoidalMLP(nn.Module):
    """Sinusoidal embedding of a scalar per sample followed by Linear + GELU."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, hidden_dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(values, self.dim).to(self.linear.weight.dtype)
        return F.gelu(self.linear(emb))

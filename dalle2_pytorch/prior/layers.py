"""Small building blocks of the prior's causal transformer.

Each block computes the same function as its counterpart in the reference DALLE2-pytorch 1.15.6
(so reference checkpoints load through :mod:`dalle2_pytorch.compat.prior`), written with fused
PyTorch ops where one exists.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GainLayerNorm(nn.Module):
    """LayerNorm with a learned gain and no bias (the reference's prior ``LayerNorm``).

    ``stable=True`` first divides each vector by its (detached) maximum, which keeps the final
    norm finite in half precision.  The epsilon is 1e-5 in float32 and 1e-3 in lower precision.
    """

    def __init__(self, dim: int, *, stable: bool = False) -> None:
        super().__init__()
        self.stable = stable
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        return F.layer_norm(x, (x.shape[-1],), weight=self.weight.to(x.dtype), eps=eps)


class SwiGLUFeedForward(nn.Module):
    """Pre-norm feed-forward with a SwiGLU gate (Shazeer 2020).

    ``post_activation_norm`` adds NormFormer's LayerNorm after the gate (Shleifer et al. 2021).
    """

    def __init__(self, dim: int, *, mult: float = 4, dropout: float = 0.0,
                 post_activation_norm: bool = False) -> None:
        super().__init__()
        inner_dim = int(mult * dim)
        self.norm = GainLayerNorm(dim)
        self.proj_in = nn.Linear(dim, inner_dim * 2, bias=False)
        self.post_norm = GainLayerNorm(inner_dim) if post_activation_norm else None
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        hidden = value * F.silu(gate)
        if self.post_norm is not None:
            hidden = self.post_norm(hidden)
        return self.proj_out(self.dropout(hidden))


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias, one learned scalar per (bucket, head).

    Only keys at or before the query matter in a causal transformer, so the bucket is computed
    from ``max(query_pos - key_pos, 0)``: exact for small distances, logarithmic beyond.
    """

    def __init__(self, heads: int, *, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bucket_bias = nn.Embedding(num_buckets, heads)

    def bucket(self, distance: torch.Tensor) -> torch.Tensor:
        distance = distance.clamp(min=0)
        max_exact = self.num_buckets // 2
        log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(self.max_distance / max_exact)
        large = (max_exact + (log_ratio * (self.num_buckets - max_exact)).long()).clamp(max=self.num_buckets - 1)
        return torch.where(distance < max_exact, distance, large)

    def buckets(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """Bucket index (len(query_positions), len(key_positions)) of every query/key pair."""
        return self.bucket(query_positions[:, None] - key_positions[None, :])

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        """Bias of shape (n, heads, m) for bucket indices (n, m) from :meth:`buckets`."""
        return self.bucket_bias(buckets).transpose(1, 2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) on the first ``dim`` of ``head_dim`` features.

    Pairs ``(x[2i], x[2i+1])`` are rotated by ``pos * theta^(-2i/dim)`` (interleaved pairs, as the
    ``rotary-embedding-torch`` package used by the reference does); features past ``dim`` pass
    through.  The tables are padded to ``head_dim`` (cos 1, sin 0) so one multiply-add rotates all.
    """

    def __init__(self, dim: int, head_dim: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 or dim > head_dim:
            raise ValueError(f"rotary dim must be even and at most head_dim={head_dim}, got {dim}")
        self.dim, self.head_dim = dim, head_dim
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) of shape (n, head_dim) for integer positions (n,)."""
        angle = (positions.float()[:, None] * self.inv_freq.to(positions.device)[None, :]).repeat_interleave(2, dim=-1)
        cos, sin = angle.cos(), angle.sin()
        sin = sin * torch.tensor([-1.0, 1.0], device=sin.device).repeat(self.dim // 2)
        pad = self.head_dim - self.dim
        if pad:
            cos = torch.cat((cos, cos.new_ones(cos.shape[0], pad)), dim=-1)
            sin = torch.cat((sin, sin.new_zeros(sin.shape[0], pad)), dim=-1)
        return cos, sin

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (..., head_dim) with tables from :meth:`tables` broadcast to its shape.

        ``x * cos + swap_pairs(x) * sin`` with the sign folded into ``sin``: (a, b) -> (a cos - b sin, b cos + a sin).
        """
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return x * cos + swapped * sin


class SinusoidalTimeEmbedding(nn.Module):
    """Continuous-time features ``[sin(t w_k), cos(t w_k)]`` with log-spaced ``w_k`` (no parameters)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4:
            raise ValueError(f"sinusoidal time embedding needs dim >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        angle = t.float()[:, None] * freqs[None, :]
        return torch.cat((angle.sin(), angle.cos()), dim=-1)

"""Convolutional encoder/decoder of the VQGAN: strided convs, residual blocks, attention at the bottom.

The encoder halves the resolution ``layers`` times (``channels -> dim*layer_mults[-1]``); the decoder
mirrors it.  Self-attention runs only at the lowest resolution, where the token count is smallest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(num_channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm whose group count divides ``num_channels`` (the largest divisor of both)."""
    return nn.GroupNorm(math.gcd(groups, num_channels), num_channels)


class ResnetBlock(nn.Module):
    """Two 3x3 convs with GroupNorm and LeakyReLU, added back onto the input."""

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            group_norm(dim, groups),
            nn.LeakyReLU(0.1),
            nn.Conv2d(dim, dim, 3, padding=1),
            group_norm(dim, groups),
            nn.LeakyReLU(0.1),
            nn.Conv2d(dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class SpatialSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, groups: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = group_norm(dim, groups)
        self.to_qkv = nn.Conv2d(dim, inner * 3, 1, bias=False)
        self.to_out = nn.Conv2d(inner, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, self.dim_head, h * w).transpose(-1, -2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)
        return x + self.to_out(out)


class ResnetEncDec(nn.Module):
    """Encoder and decoder pair; ``encode`` maps (b, channels, h, w) to (b, encoded_dim, h/2^layers, w/2^layers)."""

    def __init__(self, *, dim: int, channels: int, layers: int, layer_mults: tuple[int, ...],
                 num_resnet_blocks: int, resnet_groups: int = 16, first_conv_kernel_size: int = 5,
                 use_attn: bool = True, attn_heads: int = 8, attn_dim_head: int = 64) -> None:
        super().__init__()
        dims = [dim] + [dim * mult for mult in layer_mults]
        self.encoded_dim = dims[-1]
        self.layers = layers

        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for index, (dim_in, dim_out) in enumerate(zip(dims[:-1], dims[1:])):
            at_bottom = index == layers - 1
            encoder = [nn.Conv2d(dim_in, dim_out, 4, stride=2, padding=1), nn.LeakyReLU(0.1)]
            encoder += [ResnetBlock(dim_out, resnet_groups) for _ in range(num_resnet_blocks)]
            if at_bottom and use_attn:
                encoder.append(SpatialSelfAttention(dim_out, attn_heads, attn_dim_head, resnet_groups))
            self.encoders.append(nn.Sequential(*encoder))

            decoder: list[nn.Module] = []
            if at_bottom and use_attn:
                decoder.append(SpatialSelfAttention(dim_out, attn_heads, attn_dim_head, resnet_groups))
            decoder += [ResnetBlock(dim_out, resnet_groups) for _ in range(num_resnet_blocks)]
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim_out, dim_in, 3, padding=1),
                        nn.LeakyReLU(0.1)]
            self.decoders.insert(0, nn.Sequential(*decoder))

        self.conv_in = nn.Conv2d(channels, dim, first_conv_kernel_size, padding=first_conv_kernel_size // 2)
        self.conv_out = nn.Conv2d(dim, channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for encoder in self.encoders:
            x = encoder(x)
        return x

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        for decoder in self.decoders:
            x = decoder(x)
        return self.conv_out(x)

    @property
    def last_decoder_weight(self) -> torch.Tensor:
        """The weight the adaptive GAN weight differentiates against."""
        return self.conv_out.weight

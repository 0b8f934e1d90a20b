"""ViT-VQGAN encoder/decoder (Yu et al. 2021): patches -> transformer -> latent grid, and back.

The image is cut into ``patch_size`` squares, each embedded to ``dim``; ``layers`` transformer blocks
run on the patch tokens.  The latent grid is (b, dim, h/patch_size, w/patch_size).  Positions use a
fixed 2-D sine-cosine embedding computed for the grid at hand, so any size divisible by the patch size
works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d_positions(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """(height*width, dim) fixed sine-cosine embedding of 2-D grid positions (dim divisible by 4)."""
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    ys = ys.flatten()[:, None] * freqs
    xs = xs.flatten()[:, None] * freqs
    return torch.cat((ys.sin(), ys.cos(), xs.sin(), xs.cos()), dim=-1)


class TransformerBlock(nn.Module):
    """Pre-norm attention and feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.attn_norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(),
                                nn.Linear(dim * ff_mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.attn_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.to_out(attended)
        return x + self.ff(x)


class ViTEncDec(nn.Module):
    """Patch transformer encoder and decoder; ``encoded_dim == dim``, downsampling by ``patch_size``."""

    def __init__(self, *, dim: int, channels: int, layers: int, patch_size: int = 8, heads: int = 8,
                 dim_head: int = 32, ff_mult: int = 4) -> None:
        super().__init__()
        if dim % 4 != 0:
            raise ValueError(f"vae_type='vit' needs dim divisible by 4 for 2-D positions, got dim={dim}")
        self.dim, self.channels, self.patch_size = dim, channels, patch_size
        self.encoded_dim = dim
        patch_dim = channels * patch_size * patch_size
        self.patch_in = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.encoder = nn.Sequential(*[TransformerBlock(dim, heads, dim_head, ff_mult) for _ in range(layers)])
        self.encoder_norm = nn.LayerNorm(dim)
        self.decoder = nn.Sequential(*[TransformerBlock(dim, heads, dim_head, ff_mult) for _ in range(layers)])
        self.decoder_norm = nn.LayerNorm(dim)
        self.patch_out = nn.Linear(dim, patch_dim)

    def _to_tokens(self, fmap: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        b, d, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)
        return tokens + sincos_2d_positions(h, w, d, fmap.device).to(tokens.dtype), h, w

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        b, c, h, w = img.shape
        p = self.patch_size
        patches = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), -1)
        tokens = self.patch_in(patches)
        tokens = tokens + sincos_2d_positions(h // p, w // p, self.dim, img.device).to(tokens.dtype)
        tokens = self.encoder_norm(self.encoder(tokens))
        return tokens.transpose(1, 2).reshape(b, self.dim, h // p, w // p)

    def decode(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens, gh, gw = self._to_tokens(fmap)
        patches = self.patch_out(self.decoder_norm(self.decoder(tokens)))
        b, p, c = fmap.shape[0], self.patch_size, self.channels
        return patches.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)

    @property
    def last_decoder_weight(self) -> torch.Tensor:
        return self.patch_out.weight

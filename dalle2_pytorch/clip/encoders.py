"""CLIP's two towers: a text transformer over token ids and a ViT over image patches.

Both prepend a learned CLS token whose output is the pooled embedding; the outputs of the
other positions are the per-token (per-patch) encodings.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from dalle2_pytorch.clip.transformer import Transformer

TEXT_PAD_ID = 0


class TextEncoder(nn.Module):
    """Token + position embeddings, a CLS token, and a bidirectional transformer; id 0 is padding."""

    def __init__(self, num_tokens: int, dim: int, seq_len: int, depth: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.token_emb = nn.Embedding(num_tokens, dim)
        self.pos_emb = nn.Parameter(torch.randn(seq_len + 1, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads, dim_head)
        nn.init.normal_(self.token_emb.weight, std=0.02)

    def encode_embeddings(self, token_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the transformer on already-embedded tokens (b, n, d); returns (b, 1 + n, d), CLS first."""
        b, n, _ = token_embeds.shape
        cls = self.cls_token.expand(b, 1, -1)
        x = torch.cat((cls, token_embeds), dim=1) + self.pos_emb[: n + 1]
        mask = torch.cat((mask.new_ones(b, 1), mask), dim=1)
        return self.transformer(x, mask)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.encode_embeddings(self.token_emb(text), text != TEXT_PAD_ID)


class VisionEncoder(nn.Module):
    """A ViT: linear patch embedding, CLS token, learned positions, optional patch dropout while training."""

    def __init__(self, image_size: int, patch_size: int, channels: int, dim: int, depth: int, heads: int,
                 dim_head: int, patch_dropout: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_dropout = patch_dropout
        self.to_patch_embed = nn.Sequential(
            nn.LayerNorm(channels * patch_size ** 2), nn.Linear(channels * patch_size ** 2, dim), nn.LayerNorm(dim))
        self.pos_emb = nn.Parameter(torch.randn(self.num_patches, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads, dim_head)

    def drop_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Keep a random ``1 - patch_dropout`` share of each image's patches (at least one)."""
        b, n, d = patches.shape
        keep = max(1, int(n * (1 - self.patch_dropout)))
        index = torch.rand(b, n, device=patches.device).topk(keep, dim=-1).indices
        return patches.gather(1, index[..., None].expand(-1, -1, d))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(b, c, h, w) -> (b, 1 + patches, d), CLS first."""
        p = self.patch_size
        x = self.to_patch_embed(rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
        x = x + self.pos_emb
        if self.training and self.patch_dropout > 0:
            x = self.drop_patches(x)
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        return self.transformer(torch.cat((cls, x), dim=1))

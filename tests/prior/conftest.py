"""Shared helpers for the prior tests: tiny models, a fake CLIP adapter, one CPU thread."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn



class FakeClipAdapter(nn.Module):
    """A deterministic stand-in with the adapter interface: token ids -> embeddings via tables."""

    def __init__(self, dim_latent: int = 16, vocab: int = 50, image_size: int = 4) -> None:
        super().__init__()
        self.dim_latent = dim_latent
        self.token_table = nn.Embedding(vocab, dim_latent)
        self.image_proj = nn.Linear(3 * image_size * image_size, dim_latent)

    def embed_text(self, tokens: torch.Tensor):
        mask = tokens != 0
        encodings = self.token_table(tokens) * mask[..., None]
        embed = F.normalize(encodings.sum(dim=1), dim=-1)
        return embed, encodings, mask

    def embed_image(self, images: torch.Tensor):
        return F.normalize(self.image_proj(images.flatten(1)), dim=-1), None


@pytest.fixture
def fake_clip() -> FakeClipAdapter:
    torch.manual_seed(0)
    return FakeClipAdapter()

"""Masked language modelling on CLIP's text tower (the text self-supervision of DeCLIP).

A random 15% of each caption's real tokens (at least one) are replaced by a learned mask
embedding, the text transformer encodes the corrupted caption, and a linear head predicts the
original ids at the masked positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.clip.encoders import TEXT_PAD_ID, TextEncoder


class MaskedLanguageModel(nn.Module):
    def __init__(self, dim: int, num_tokens: int, mask_prob: float = 0.15) -> None:
        super().__init__()
        self.mask_prob = mask_prob
        self.mask_embed = nn.Parameter(torch.randn(dim) * 0.02)
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_tokens))

    def choose_positions(self, text: torch.Tensor) -> torch.Tensor:
        """(b, n) bool: which real tokens to mask; every caption with a real token gets at least one."""
        real = text != TEXT_PAD_ID
        scores = torch.rand(text.shape, device=text.device).masked_fill(~real, -1.0)
        chosen = (scores >= 1 - self.mask_prob) & real
        best = scores.argmax(dim=-1, keepdim=True)
        at_least_one = torch.zeros_like(chosen).scatter(1, best, True) & real
        return chosen | at_least_one

    def forward(self, text_encoder: TextEncoder, text: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of predicting the masked ids (0 if no caption has a real token)."""
        positions = self.choose_positions(text)
        if not positions.any():
            return self.mask_embed.sum() * 0.0
        embeds = text_encoder.token_emb(text)
        embeds = torch.where(positions[..., None], self.mask_embed.to(embeds.dtype), embeds)
        encoded = text_encoder.encode_embeddings(embeds, text != TEXT_PAD_ID)[:, 1:]
        return F.cross_entropy(self.to_logits(encoded[positions]), text[positions])

"""Turns (time, image embedding, text encodings, low-res noise level) into the U-Net's conditioning.

Outputs, for a batch of b samples:

* ``time_cond`` (b, time_cond_dim): FiLM input of every resnet block = time MLP
  (+ image-embedding MLP, paper: "projecting and adding CLIP embeddings to the timestep embedding")
  (+ low-res noise-level MLP, Imagen noise-conditioning augmentation).
* ``cond`` (b, n, cond_dim): tokens for cross-attention = time tokens (+ image tokens), LayerNormed.
* ``mid_cond`` (b, n + max_text_len, cond_dim): ``cond`` plus projected text tokens, used by the two
  middle blocks only (text is cross-attended at the bottleneck, as in the reference).

Dropped conditions (for classifier-free guidance) and text padding are replaced by learned null
tokens/hiddens, so a "null" pass is a real, trained input rather than zeros.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from dalle2_pytorch.clip.conditioning import null_pad_text
from dalle2_pytorch.diffusion.guidance import condition_keep_mask as keep_mask

from .layers import SinusoidalMLP


class UnetConditioning(nn.Module):
    def __init__(self, *, dim: int, cond_dim: int, time_cond_dim: int, num_time_tokens: int,
                 image_embed_dim: int | None, cond_on_image_embeds: bool, num_image_tokens: int,
                 add_image_embeds_to_time: bool, text_embed_dim: int | None, cond_on_text_encodings: bool,
                 max_text_len: int, lowres_noise_cond: bool):
        super().__init__()
        self.cond_dim, self.num_time_tokens, self.num_image_tokens = cond_dim, num_time_tokens, num_image_tokens
        self.image_embed_dim, self.text_embed_dim, self.max_text_len = image_embed_dim, text_embed_dim, max_text_len
        self.time_to_hidden = SinusoidalMLP(dim, time_cond_dim)
        self.time_to_tokens = nn.Linear(time_cond_dim, cond_dim * num_time_tokens)
        self.time_to_cond = nn.Linear(time_cond_dim, time_cond_dim)

        self.image_to_tokens = self.image_to_hidden = None
        if cond_on_image_embeds:
            self.image_to_tokens = nn.Linear(image_embed_dim, cond_dim * num_image_tokens)
            self.null_image_tokens = nn.Parameter(torch.randn(num_image_tokens, cond_dim))
            if add_image_embeds_to_time:
                self.image_to_hidden = nn.Linear(image_embed_dim, time_cond_dim)
                self.null_image_hidden = nn.Parameter(torch.randn(time_cond_dim))

        self.text_to_tokens = None
        if cond_on_text_encodings:
            self.text_to_tokens = nn.Linear(text_embed_dim, cond_dim)
            self.null_text_tokens = nn.Parameter(torch.randn(max_text_len, cond_dim))

        self.lowres_noise_to_hidden = self.lowres_noise_to_cond = None
        if lowres_noise_cond:
            self.lowres_noise_to_hidden = SinusoidalMLP(dim, time_cond_dim)
            self.lowres_noise_to_cond = nn.Linear(time_cond_dim, time_cond_dim)

        self.norm_cond = nn.LayerNorm(cond_dim)
        self.norm_mid_cond = nn.LayerNorm(cond_dim)

    def forward(self, time: torch.Tensor, *, batch: int, image_embed: torch.Tensor | None,
                text_encodings: torch.Tensor | None, text_mask: torch.Tensor | None,
                lowres_noise_level: torch.Tensor | None, image_cond_drop_prob: float,
                text_cond_drop_prob: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = time.device
        time_hidden = self.time_to_hidden(time)
        time_cond = self.time_to_cond(time_hidden)
        tokens = [self.time_to_tokens(time_hidden).view(batch, self.num_time_tokens, self.cond_dim)]

        if self.lowres_noise_to_hidden is not None:
            time_cond = time_cond + self.lowres_noise_to_cond(self.lowres_noise_to_hidden(lowres_noise_level))

        if self.image_to_tokens is not None:
            keep_image = keep_mask(batch, image_cond_drop_prob, device)[:, None]
            if self.image_to_hidden is not None:
                image_hidden = F.gelu(self.image_to_hidden(image_embed))
                time_cond = time_cond + torch.where(keep_image, image_hidden, self.null_image_hidden.to(image_hidden.dtype))
            image_tokens = self.image_to_tokens(image_embed).view(batch, self.num_image_tokens, self.cond_dim)
            tokens.append(torch.where(keep_image[:, :, None], image_tokens, self.null_image_tokens.to(image_tokens.dtype)))

        cond = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]
        mid_cond = cond
        if self.text_to_tokens is not None:
            text_tokens = self._text_tokens(text_encodings, text_mask, keep_mask(batch, text_cond_drop_prob, device))
            mid_cond = torch.cat((cond, text_tokens), dim=1)
        return time_cond, self.norm_cond(cond), self.norm_mid_cond(mid_cond)

    def _text_tokens(self, text_encodings: torch.Tensor, text_mask: torch.Tensor | None,
                     keep_text: torch.Tensor) -> torch.Tensor:
        """Projected text as ``max_text_len`` tokens with learned null padding (and for dropped rows)."""
        if text_mask is None:
            text_mask = (text_encodings != 0).any(dim=-1)   # padding rows are zero before the projection
        return null_pad_text(self.text_to_tokens(text_encodings), self.null_text_tokens, self.max_text_len,
                             mask=text_mask, keep=keep_text)

"""The named results of embedding text and images, shared by :class:`CLIP` and the adapters."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class EmbeddedText(NamedTuple):
    """``text_embed`` (b, dim_latent), l2-normalised; ``text_encodings`` (b, n, d) per-token features with
    padding rows zeroed; ``text_mask`` (b, n) bool, True at real tokens."""

    text_embed: torch.Tensor
    text_encodings: torch.Tensor
    text_mask: torch.Tensor


class EmbeddedImage(NamedTuple):
    """``image_embed`` (b, dim_latent), l2-normalised; ``image_encodings`` (b, patches, d) or None when the
    wrapped model does not expose them."""

    image_embed: torch.Tensor
    image_encodings: Optional[torch.Tensor]

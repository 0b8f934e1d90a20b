"""What the decoder's unets are conditioned on: CLIP image embeddings and text encodings.

:class:`DecoderConditions` holds the (frozen) CLIP adapter, computes embeddings that the caller did
not pass, checks every conditioning tensor against the unets that will use it, and hands each unet
only the keywords it takes.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn


def _batch_of(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return len(value)
    return int(value.shape[0])


class DecoderConditions:
    """Conditioning logic of a :class:`~dalle2_pytorch.decoder.decoder.Decoder` (not a module: the
    decoder registers ``clip`` itself)."""

    def __init__(self, clip: Optional[nn.Module], *, unconditional: bool, channels: int,
                 auto_normalize_img: bool) -> None:
        self.unconditional = unconditional
        self.auto_normalize_img = auto_normalize_img
        self.uses_text = False
        if clip is not None:
            if unconditional:
                raise ValueError("clip must not be given to an unconditional decoder (unconditional=True)")
            from dalle2_pytorch.clip.adapters import to_clip_adapter

            clip = to_clip_adapter(clip)
            clip_channels = getattr(clip, "image_channels", channels)
            if clip_channels != channels:
                raise ValueError(f"channels={channels} but the CLIP takes images with {clip_channels} channels")
            clip.requires_grad_(False)
            clip.eval()
        self.clip = clip

    # ------------------------------------------------------------------ construction checks
    def check_unets(self, unets: Sequence[nn.Module]) -> None:
        self.uses_text = any(bool(getattr(u, "cond_on_text_encodings", False)) for u in unets)
        if self.clip is None:
            return
        dim = getattr(self.clip, "dim_latent", None)
        text_dim = getattr(self.clip, "dim_text_encodings", None)
        for number, unet in enumerate(unets, start=1):
            if getattr(unet, "cond_on_image_embeds", False) and dim is not None and unet.image_embed_dim != dim:
                raise ValueError(f"unet {number} has image_embed_dim={unet.image_embed_dim} but the CLIP's "
                                 f"embeddings have dim_latent={dim}")
            if getattr(unet, "cond_on_text_encodings", False) and text_dim is not None and \
                    unet.text_embed_dim != text_dim:
                raise ValueError(f"unet {number} has text_embed_dim={unet.text_embed_dim} but the CLIP's text "
                                 f"encodings have width {text_dim}")

    # ------------------------------------------------------------------ per call
    def batch_size(self, *, image_embed: Optional[Tensor], text: Any, text_encodings: Optional[Tensor],
                   image: Optional[Tensor], batch_size: int) -> int:
        """The sampling batch: from the conditioning given (which must agree), else ``batch_size``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
        given = {name: _batch_of(v) for name, v in (("image_embed", image_embed), ("text", text),
                                                       ("text_encodings", text_encodings), ("image", image))
                 if v is not None}
        if not given:
            return batch_size
        sizes = set(given.values())
        if len(sizes) > 1:
            raise ValueError(f"batch sizes disagree: {given}")
        size = sizes.pop()
        if batch_size not in (1, size):
            raise ValueError(f"batch_size={batch_size} disagrees with the conditioning's batch of {size} ({given})")
        return size

    def prepare(self, *, image: Optional[Tensor], text: Any, image_embed: Optional[Tensor],
                text_encodings: Optional[Tensor], batch: int, unets: Sequence[nn.Module]) -> dict[str, Any]:
        """Check/compute the embeddings that ``unets`` need: ``{'batch', 'image_embed', 'text_encodings'}``."""
        embeds: dict[str, Any] = {"batch": batch, "image_embed": None, "text_encodings": None}
        if self.unconditional:
            given = [n for n, v in (("text", text), ("image_embed", image_embed), ("text_encodings", text_encodings))
                     if v is not None]
            if given:
                raise ValueError(f"this decoder is unconditional; it takes no {', '.join(given)}")
            return embeds
        if text is not None and text_encodings is not None:
            raise ValueError("pass either text (token ids) or text_encodings, not both")
        if (text is not None or text_encodings is not None) and not self.uses_text:
            raise ValueError("this decoder is not conditioned on text (no unet has cond_on_text_encodings=True); "
                             "do not pass text or text_encodings")

        image_unets = [u for u in unets if getattr(u, "cond_on_image_embeds", False)]
        if image_unets:
            if image_embed is None:
                if self.clip is None or image is None:
                    raise ValueError("image_embed is required: the decoder is conditioned on CLIP image embeddings "
                                     "(pass image_embed=, or build the decoder with clip= to embed training images)")
                image_embed = self.embed_image(image)
            dim = image_unets[0].image_embed_dim
            if image_embed.ndim != 2 or image_embed.shape[0] != batch or image_embed.shape[1] != dim:
                raise ValueError(f"image_embed must have shape ({batch}, {dim}), got {tuple(image_embed.shape)}")
            embeds["image_embed"] = image_embed

        text_unets = [u for u in unets if getattr(u, "cond_on_text_encodings", False)]
        if text_unets:
            if text_encodings is None:
                if text is None:
                    raise ValueError("text or text_encodings is required: this unet is conditioned on text encodings")
                if self.clip is None:
                    raise ValueError("text (token ids) needs the decoder's clip to encode it; pass text_encodings= "
                                     "or build the decoder with clip=")
                text_encodings = self.embed_text(text)
            dim = text_unets[0].text_embed_dim
            if text_encodings.ndim != 3 or text_encodings.shape[0] != batch or text_encodings.shape[2] != dim:
                raise ValueError(f"text_encodings must have shape ({batch}, length, {dim}), "
                                 f"got {tuple(text_encodings.shape)}")
            embeds["text_encodings"] = text_encodings
        return embeds

    def unet_kwargs(self, unet: nn.Module, embeds: dict[str, Any],
                    device: Optional[torch.device] = None) -> dict[str, Tensor]:
        """The conditioning keywords that ``unet`` takes."""
        kwargs: dict[str, Tensor] = {}
        if getattr(unet, "cond_on_image_embeds", False) and embeds["image_embed"] is not None:
            kwargs["image_embed"] = embeds["image_embed"]
        if getattr(unet, "cond_on_text_encodings", False) and embeds["text_encodings"] is not None:
            kwargs["text_encodings"] = embeds["text_encodings"]
        if device is not None:
            kwargs = {k: v.to(device) for k, v in kwargs.items()}
        return kwargs

    @staticmethod
    def can_guide(unet: nn.Module, settings: Any) -> bool:
        """Whether classifier-free guidance changes anything for ``unet`` (it saw dropped conditions)."""
        return (bool(getattr(unet, "cond_on_image_embeds", False)) and settings.image_cond_drop_prob > 0) or \
            (bool(getattr(unet, "cond_on_text_encodings", False)) and settings.text_cond_drop_prob > 0)

    # ------------------------------------------------------------------ CLIP
    @torch.no_grad()
    def embed_image(self, image: Tensor) -> Tensor:
        """CLIP image embedding of images in the decoder's input range (the adapter takes [0, 1])."""
        image01 = image if self.auto_normalize_img else (image + 1) * 0.5
        image_embed, _ = self.clip.embed_image(image01)
        return image_embed.detach()

    @torch.no_grad()
    def embed_text(self, text: Any) -> Tensor:
        """Per-token CLIP text encodings with padded positions zeroed (zero rows are padding to the unet)."""
        _, text_encodings, text_mask = self.clip.embed_text(text)
        if text_mask is not None:
            text_encodings = text_encodings.masked_fill(~text_mask.bool().unsqueeze(-1), 0.0)
        return text_encodings.detach()

"""What the decoder's unets are conditioned on: CLIP image embeddings and text encodings.

:class:`DecoderConditions` holds the (frozen) CLIP adapter, computes embeddings that the caller did
not pass, checks every conditioning tensor against the unets that will use it, and hands each unet
only the keywords it takes.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from dalle2_pytorch.clip.conditioning import (check_clip_fits, check_embedding, check_text_encodings, clip_image_embed,
                                              clip_text_condition, frozen_clip_adapter)


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
        if clip is not None and unconditional:
            raise ValueError("clip must not be given to an unconditional decoder (unconditional=True)")
        self.clip = frozen_clip_adapter(clip)
        if self.clip is not None:
            check_clip_fits(self.clip, "the decoder", channels=channels)

    # ------------------------------------------------------------------ construction checks
    def check_unets(self, unets: Sequence[nn.Module]) -> None:
        self.uses_text = any(bool(getattr(u, "cond_on_text_encodings", False)) for u in unets)
        if self.clip is None:
            return
        for number, unet in enumerate(unets, start=1):
            check_clip_fits(self.clip, f"unet {number}",
                            image_embed_dim=unet.image_embed_dim if unet.cond_on_image_embeds else None,
                            text_embed_dim=unet.text_embed_dim if unet.cond_on_text_encodings else None)

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
            embeds["image_embed"] = check_embedding("image_embed", image_embed, image_unets[0].image_embed_dim, batch)

        text_unets = [u for u in unets if getattr(u, "cond_on_text_encodings", False)]
        if text_unets:
            if text_encodings is None:
                if text is None:
                    raise ValueError("text or text_encodings is required: this unet is conditioned on text encodings")
                if self.clip is None:
                    raise ValueError("text (token ids) needs the decoder's clip to encode it; pass text_encodings= "
                                     "or build the decoder with clip=")
                text_encodings = self.embed_text(text)
            embeds["text_encodings"] = check_text_encodings(text_encodings, text_unets[0].text_embed_dim, batch)
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

    # ------------------------------------------------------------------ CLIP
    def embed_image(self, image: Tensor) -> Tensor:
        """CLIP image embedding of images in the decoder's input range (the adapter takes [0, 1])."""
        return clip_image_embed(self.clip, image if self.auto_normalize_img else (image + 1) * 0.5)

    def embed_text(self, text: Any) -> Tensor:
        """Per-token CLIP text encodings with padded positions zeroed (zero rows are padding to the unet)."""
        return clip_text_condition(self.clip, text)[1]

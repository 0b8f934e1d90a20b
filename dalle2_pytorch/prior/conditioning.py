"""Turning the inputs of a prior (tokens or precomputed embeddings) into embeddings.

A prior takes either raw inputs, embedded by its frozen CLIP (any object with the adapter
interface: ``embed_text(tokens) -> (text_embed, text_encodings, text_mask)``,
``embed_image(images) -> (image_embed, image_encodings)``, ``dim_latent``), or the embeddings
themselves, precomputed.  These helpers check which was given and that the shapes fit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def prepare_clip(clip: Any) -> nn.Module | None:
    """Wrap ``clip`` in its adapter (when the adapter module knows it), freeze it and put it in eval mode."""
    if clip is None:
        return None
    try:
        from dalle2_pytorch.clip.adapters import to_clip_adapter
        adapter = to_clip_adapter(clip)
    except (ImportError, TypeError):
        adapter = clip  # may already speak the adapter interface (e.g. a user-written adapter); checked below
    for name in ("embed_text", "embed_image", "dim_latent"):
        if not hasattr(adapter, name):
            raise TypeError(f"clip must be a CLIP model or adapter with embed_text, embed_image and dim_latent; "
                            f"{type(clip).__name__} has no {name!r}")
    if isinstance(adapter, nn.Module):
        adapter.eval()
        adapter.requires_grad_(False)
    return adapter


def _exactly_one(raw_name: str, raw: Any, embed_name: str, embed: Any) -> None:
    if (raw is None) == (embed is None):
        given = "both" if raw is not None else "neither"
        raise ValueError(f"pass exactly one of {raw_name}= and {embed_name}= (got {given})")


def embed_text(clip: Any, *, text: torch.Tensor | None, text_embed: torch.Tensor | None,
               text_encodings: torch.Tensor | None, dim: int,
               need_encodings: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(text_embed (b, dim), text_encodings (b, n, dim) or None) from tokens or precomputed embeddings.

    Encodings from the CLIP have their padding rows zeroed (the network treats all-zero rows as
    padding); they are returned only when ``need_encodings``.
    """
    _exactly_one("text", text, "text_embed", text_embed)
    if text is not None:
        if clip is None:
            raise ValueError("text= needs a prior built with clip=; pass text_embed= (and text_encodings=) instead")
        if text_encodings is not None:
            raise ValueError("pass text_encodings= together with text_embed=, not with text=")
        out = clip.embed_text(text)
        text_embed, text_encodings = out[0], out[1]
        if len(out) > 2 and out[2] is not None:
            text_encodings = text_encodings * out[2][..., None].to(text_encodings.dtype)
    if text_embed.ndim != 2 or text_embed.shape[1] != dim:
        raise ValueError(f"text_embed must have shape (batch, {dim}), got {tuple(text_embed.shape)}")
    if not need_encodings:
        return text_embed, None
    if text_encodings is None:
        raise ValueError("this prior is conditioned on text encodings (condition_on_text_encodings=True): "
                         "pass text= or text_encodings=")
    if text_encodings.ndim != 3 or text_encodings.shape[0] != text_embed.shape[0] or text_encodings.shape[2] != dim:
        raise ValueError(f"text_encodings must have shape ({text_embed.shape[0]}, length, {dim}), got "
                         f"{tuple(text_encodings.shape)} (a CLIP whose text width differs from the prior's dim "
                         f"cannot condition on text encodings)")
    return text_embed, text_encodings


def embed_image(clip: Any, *, image: torch.Tensor | None, image_embed: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Image embedding (b, dim) from images or a precomputed embedding."""
    _exactly_one("image", image, "image_embed", image_embed)
    if image is not None:
        if clip is None:
            raise ValueError("image= needs a prior built with clip=; pass image_embed= instead")
        image_embed = clip.embed_image(image)[0]
    if image_embed.ndim != 2 or image_embed.shape[1] != dim:
        raise ValueError(f"image_embed must have shape (batch, {dim}), got {tuple(image_embed.shape)}")
    return image_embed


def resolve_embed_dim(clip: Any, image_embed_dim: int | None) -> int:
    """The embedding width: ``image_embed_dim`` or the CLIP's ``dim_latent`` (which must agree)."""
    if clip is None and image_embed_dim is None:
        raise ValueError("image_embed_dim is required when no clip is given")
    if clip is not None and image_embed_dim is not None and image_embed_dim != clip.dim_latent:
        raise ValueError(f"image_embed_dim={image_embed_dim} differs from the clip's dim_latent={clip.dim_latent}")
    return int(image_embed_dim if image_embed_dim is not None else clip.dim_latent)


def rerank_by_text_similarity(image_embeds: torch.Tensor, text_embed: torch.Tensor, per_text: int) -> torch.Tensor:
    """Keep, for each text, the candidate image embed with the highest cosine to its text embed.

    ``image_embeds`` (b * per_text, d) holds ``per_text`` consecutive candidates per text,
    ``text_embed`` (b, d).  This is the DALL-E 2 paper's rerank of prior samples.
    """
    candidates = image_embeds.view(text_embed.shape[0], per_text, -1)
    sims = torch.einsum("brd,bd->br", nn.functional.normalize(candidates, dim=-1),
                        nn.functional.normalize(text_embed.to(candidates.dtype), dim=-1))
    best = sims.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]

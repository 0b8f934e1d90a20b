"""Turning the inputs of a prior (tokens or precomputed embeddings) into embeddings.

A prior takes either raw inputs, embedded by its frozen CLIP through the shared
:mod:`dalle2_pytorch.clip.conditioning` helpers, or the embeddings themselves, precomputed.  These
functions check which was given and that the shapes fit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dalle2_pytorch.clip.conditioning import (check_embedding, check_text_encodings, clip_image_embed,
                                              clip_text_condition)


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
        text_embed, text_encodings, _ = clip_text_condition(clip, text)
    check_embedding("text_embed", text_embed, dim)
    if not need_encodings:
        return text_embed, None
    if text_encodings is None:
        raise ValueError("this prior is conditioned on text encodings (condition_on_text_encodings=True): "
                         "pass text= or text_encodings=")
    check_text_encodings(text_encodings, dim, text_embed.shape[0],
                         " (a CLIP whose text width differs from the prior's dim cannot condition on text encodings)")
    return text_embed, text_encodings


def embed_image(clip: Any, *, image: torch.Tensor | None, image_embed: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Image embedding (b, dim) from images or a precomputed embedding."""
    _exactly_one("image", image, "image_embed", image_embed)
    if image is not None:
        if clip is None:
            raise ValueError("image= needs a prior built with clip=; pass image_embed= instead")
        image_embed = clip_image_embed(clip, image)
    return check_embedding("image_embed", image_embed, dim)


def most_similar_candidates(candidate_embeds: torch.Tensor, text_embed: torch.Tensor, per_text: int) -> torch.Tensor:
    """For each text, the index (0 .. per_text-1) of its candidate whose embedding has the highest cosine to the
    text embedding.  ``candidate_embeds`` (b * per_text, d) holds ``per_text`` consecutive candidates per text,
    ``text_embed`` (b, d); returns (b,) indices.  Used on prior samples and on decoder images alike."""
    candidates = candidate_embeds.view(text_embed.shape[0], per_text, -1)
    sims = torch.einsum("brd,bd->br", nn.functional.normalize(candidates, dim=-1),
                        nn.functional.normalize(text_embed.to(candidates.dtype), dim=-1))
    return sims.argmax(dim=1)


def rerank_by_text_similarity(image_embeds: torch.Tensor, text_embed: torch.Tensor, per_text: int) -> torch.Tensor:
    """Keep, for each text, the candidate image embed with the highest cosine to its text embed.

    ``image_embeds`` (b * per_text, d) holds ``per_text`` consecutive candidates per text,
    ``text_embed`` (b, d).  This is the DALL-E 2 paper's rerank of prior samples.
    """
    candidates = image_embeds.view(text_embed.shape[0], per_text, -1)
    best = most_similar_candidates(image_embeds, text_embed, per_text)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]

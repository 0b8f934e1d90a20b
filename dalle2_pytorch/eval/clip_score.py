"""CLIP score: how well generated images match their captions, as judged by any CLIP adapter.

The score of one (image, caption) pair is the cosine similarity of the CLIP image and text embeddings.  We report
the raw mean cosine (in [-1, 1]); torchmetrics' ``CLIPScore`` reports ``100 * max(cosine, 0)`` of its HF CLIP, so
multiply by 100 to compare with numbers in that convention (only across the same CLIP model).  The same score with
the captions rolled by one (each image against another image's caption) is the no-information baseline: a useful
generator scores clearly above it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch

from dalle2_pytorch.eval.features import check_images

Texts = Union[torch.Tensor, Sequence[str]]


def _adapter(clip: Any):
    from dalle2_pytorch.clip.adapters import to_clip_adapter

    adapter = to_clip_adapter(clip)
    if adapter is None:
        raise ValueError("clip must be a CLIP model or adapter, got None")
    return adapter


def _tokens(text: Texts, adapter, tokenizer: Optional[Callable[..., torch.Tensor]]) -> torch.Tensor:
    if isinstance(text, torch.Tensor):
        if text.ndim != 2 or text.is_floating_point():
            raise ValueError(f"text tokens must be an integer tensor (batch, seq_len), got {text.dtype} "
                             f"{tuple(text.shape)}")
        return text
    if isinstance(text, str):
        raise TypeError("text must be a sequence of captions (one per image) or a token tensor, not one string")
    if tokenizer is None:
        from dalle2_pytorch.clip.tokenizer import tokenize as tokenizer
    return tokenizer(list(text), context_length=adapter.max_text_len, truncate=True)


@torch.no_grad()
def clip_similarities(images: torch.Tensor, text: Texts, clip: Any, *,
                      tokenizer: Optional[Callable[..., torch.Tensor]] = None, batch_size: int = 64) -> torch.Tensor:
    """(B,) cosine similarity of each image (B, 3, H, W) in [0, 1] with its caption (B strings, or (B, n) tokens).

    ``clip``: a CLIP adapter or a raw ``dalle2_pytorch`` CLIP; strings are tokenised with ``tokenizer`` (default:
    the CLIP BPE tokenizer at the adapter's ``max_text_len``), so pass a tokenizer matching your CLIP's vocabulary.
    """
    images = check_images(images)
    adapter = _adapter(clip)
    tokens = _tokens(text, adapter, tokenizer)
    if tokens.shape[0] != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {tokens.shape[0]} captions")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = next((p.device for p in adapter.parameters()), torch.device("cpu"))
    scores = []
    for start in range(0, images.shape[0], batch_size):
        image_embed = adapter.embed_image(images[start:start + batch_size].to(device)).image_embed
        text_embed = adapter.embed_text(tokens[start:start + batch_size].to(device)).text_embed
        scores.append(torch.nn.functional.cosine_similarity(image_embed.float(), text_embed.float(), dim=-1).cpu())
    return torch.cat(scores)


def clip_score(images: torch.Tensor, text: Texts, clip: Any, *,
               tokenizer: Optional[Callable[..., torch.Tensor]] = None, batch_size: int = 64) -> dict[str, float]:
    """``{"clip_score": mean cosine(image, its caption), "clip_score_unrelated": mean cosine(image, another
    image's caption) (captions rolled by one), "clip_score_gap": their difference}``; needs at least 2 images."""
    images = check_images(images)
    if images.shape[0] < 2:
        raise ValueError("clip_score needs at least 2 images (the unrelated-caption baseline pairs them up)")
    adapter = _adapter(clip)
    tokens = _tokens(text, adapter, tokenizer)
    matched = clip_similarities(images, tokens, adapter, batch_size=batch_size).mean().item()
    unrelated = clip_similarities(images, tokens.roll(1, dims=0), adapter, batch_size=batch_size).mean().item()
    return {"clip_score": matched, "clip_score_unrelated": unrelated, "clip_score_gap": matched - unrelated}

"""Prior metrics of the reference's prior guide: cosine similarities between predicted, true and text embeddings.

For a batch of (caption, image) pairs with CLIP text embeddings ``t``, true image embeddings ``i`` and the prior's
predicted image embeddings ``p``:

* ``baseline_similarity``         = mean cos(t, i): how close CLIP puts a caption and its image (~0.3 for LAION);
* ``similarity_with_text``        = mean cos(t, p): should match the baseline (a prior that copies the text
  embedding scores higher, one that ignores the text lower);
* ``difference_from_baseline``    = similarity_with_text - baseline_similarity (guide: within ±0.01 once trained);
* ``similarity_with_image``       = mean cos(i, p): the main quality number (guide: 0.75+ on LAION after long
  training; below 0.5-0.6 after hundreds of millions of samples means something is wrong);
* ``similarity_with_unrelated_caption`` = mean cos(t_k, prediction for another caption) (guide: < 0.1).

The unrelated-caption prediction of row k is the prediction of row k-1 (captions rolled by one, as the reference
did).  Each row is an independent draw given its own caption, so this is a draw from prior(rolled captions) without
a second sampling pass.  When two rows carry the same caption (small or toy sets) it overstates the number.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


PRIOR_GUIDE_METRICS = ("baseline_similarity", "similarity_with_text", "difference_from_baseline",
                       "similarity_with_image", "similarity_with_unrelated_caption")
"""The names :func:`prior_cosine_metrics` returns."""


def prior_cosine_metrics(predicted_image_embed: torch.Tensor, text_embed: torch.Tensor,
                         image_embed: torch.Tensor) -> dict[str, float]:
    """The guide's five numbers (see the module docstring) from three (B, D) embedding batches, B >= 2."""
    shapes = {"predicted_image_embed": predicted_image_embed, "text_embed": text_embed, "image_embed": image_embed}
    for name, value in shapes.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            raise ValueError(f"{name} must be a (batch, dim) tensor, got "
                             f"{tuple(getattr(value, 'shape', ())) or type(value).__name__}")
    if len({tuple(value.shape) for value in shapes.values()}) != 1:
        raise ValueError("predicted_image_embed, text_embed and image_embed must have the same shape, got "
                         + ", ".join(f"{name} {tuple(value.shape)}" for name, value in shapes.items()))
    if text_embed.shape[0] < 2:
        raise ValueError("the unrelated-caption metric pairs rows up, so at least 2 rows are needed")
    baseline = _mean_cosine(text_embed, image_embed)
    with_text = _mean_cosine(text_embed, predicted_image_embed)
    return {
        "baseline_similarity": baseline,
        "similarity_with_text": with_text,
        "difference_from_baseline": with_text - baseline,
        "similarity_with_image": _mean_cosine(image_embed, predicted_image_embed),
        "similarity_with_unrelated_caption": _mean_cosine(text_embed, predicted_image_embed.roll(1, dims=0)),
    }


@torch.no_grad()
def evaluate_prior(prior: Any, image_embed: torch.Tensor, *, text_embed: Optional[torch.Tensor] = None,
                   text: Optional[torch.Tensor] = None, text_encodings: Optional[torch.Tensor] = None,
                   cond_scale: float = 1.0, timesteps: Optional[int] = None, sampler: Optional[str] = None,
                   num_samples_per_batch: int = 1, generator: Optional[torch.Generator] = None) -> dict[str, float]:
    """Sample image embeddings with ``prior`` and score them with :func:`prior_cosine_metrics`.

    ``prior``: a :class:`~dalle2_pytorch.prior.DiffusionPrior` or :class:`~dalle2_pytorch.prior.LinearPrior`
    (anything with their ``sample``).  Give the captions as ``text_embed`` (B, D) (and ``text_encodings`` for a
    prior conditioned on them) or as ``text`` tokens (B, n), embedded by the prior's own CLIP.  ``image_embed``
    (B, D): the true CLIP image embeddings.  The sampling options go to ``prior.sample``; the default
    ``num_samples_per_batch=1`` scores the prior's raw draws (the guide's setting), larger values score its
    best-of-n reranking.  Returns the five metrics.
    """
    if (text_embed is None) == (text is None):
        raise ValueError("give exactly one of text_embed= (precomputed CLIP text embeddings) or text= (tokens)")
    if not hasattr(prior, "sample"):
        raise TypeError(f"prior must be a DiffusionPrior or LinearPrior (with .sample), got {type(prior).__name__}")
    if text is not None:
        clip = getattr(prior, "clip", None)
        if clip is None:
            raise ValueError("text= needs a prior built with clip=; pass text_embed= instead")
        embedded = clip.embed_text(text.to(prior_device(prior)))
        text_embed = embedded.text_embed
        if text_encodings is None and getattr(prior, "condition_on_text_encodings", False):
            text_encodings = embedded.text_encodings
    device = prior_device(prior)
    predicted = prior.sample(text_embed=text_embed.to(device),
                             text_encodings=None if text_encodings is None else text_encodings.to(device),
                             num_samples_per_batch=num_samples_per_batch, cond_scale=cond_scale,
                             timesteps=timesteps, sampler=sampler, generator=generator)
    return prior_cosine_metrics(predicted.cpu(), text_embed.cpu(), image_embed.cpu())


def prior_device(prior: Any) -> torch.device:
    parameter = next(iter(prior.parameters()), None) if hasattr(prior, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")

"""Evaluate a saved text-to-image pipeline on the toy shapes set: the function behind ``dalle2 eval``.

The checkpoint is any pipeline folder :meth:`DALLE2.from_pretrained` reads (what ``dalle2 demo`` writes).  The
pipeline draws images for every toy caption through ``DALLE2`` with its saved sampling defaults; the result holds toy
faithfulness, FID and KID against real toy images, the CLIP score (by the pipeline's own CLIP, the prior's) and the
prior's cosine metrics on real toy images (sampled with the same defaults).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from dalle2_pytorch.eval.clip_score import clip_score
from dalle2_pytorch.eval.features import ClipImageFeatures, RandomConvFeatures
from dalle2_pytorch.eval.image_metrics import image_quality
from dalle2_pytorch.eval.prior_metrics import evaluate_prior
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness
from dalle2_pytorch.hub import resolve_pretrained

FEATURE_CHOICES = ("random", "clip")


@torch.no_grad()
def run_evaluation(checkpoint_dir: str | Path, *, images_per_caption: int = 4, num_real_images: int = 512,
                   features: str = "random", seed: int = 0, device: str | torch.device = "cpu",
                   say: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Generate ``images_per_caption`` images for each of the 18 toy captions and score them.

    ``num_real_images``: real toy images (a held-out seed) for FID/KID and the prior metrics.  ``features``:
    ``"random"`` (a seeded random conv net) or ``"clip"`` (the checkpoint's CLIP image embeddings) as the FID/KID
    feature space.  Returns a flat dict: ``faithfulness``, ``colour_accuracy``, ``shape_accuracy``,
    ``no_shape_rate``, ``fid``, ``kid_mean``, ``kid_std``, ``clip_score``, ``clip_score_unrelated``,
    ``clip_score_gap``, the prior's ``prior_*`` cosine metrics, plus ``num_images`` and ``seconds``.
    """
    from dalle2_pytorch.clip.tokenizer import tokenize
    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.data import ToyShapesDataset

    directory = resolve_pretrained(checkpoint_dir)  # a folder, or a Hugging Face Hub id of one
    if not directory.is_dir():
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not a directory")
    for name, value, low in (("images_per_caption", images_per_caption, 1), ("num_real_images", num_real_images, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if features not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    say = say or (lambda message: None)
    started = time.perf_counter()
    pipeline = DALLE2.from_pretrained(directory).to(device).eval()
    clip, defaults = pipeline.prior.clip, pipeline.sampling_defaults
    if clip is None and features == "clip":  # a Karlo folder has a CLIP text encoder only
        raise ValueError("features='clip' needs the pipeline's CLIP image encoder and this pipeline has none; "
                         "use features='random'")
    image_size = int(pipeline.decoder.image_sizes[-1])
    dataset = ToyShapesDataset(num_samples=num_real_images, image_size=image_size, seed=1)
    captions = [caption for caption in dataset.all_captions() for _ in range(images_per_caption)]
    generator = torch.Generator().manual_seed(seed)

    say(f"generating {len(captions)} images for {len(captions) // images_per_caption} toy captions")
    images = pipeline(captions, generator=generator).float().cpu()

    say(f"scoring against {num_real_images} real toy images")
    real_images, real_captions, _ = dataset.render_range()
    extractor = ClipImageFeatures(clip) if features == "clip" else RandomConvFeatures(image_size=image_size)
    metrics: dict[str, Any] = dict(toy_faithfulness(images, captions))
    metrics.update(image_quality(real_images, images, feature_extractor=extractor.to("cpu"),
                                 kid_subset_size=min(100, len(captions), num_real_images)))
    if clip is None:  # no CLIP image encoder: no CLIP score and no prior metrics (they compare CLIP embeddings)
        metrics.update({"num_images": len(captions), "seconds": round(time.perf_counter() - started, 1)})
        return metrics
    tokens = tokenize(captions, context_length=clip.max_text_len, truncate=True).to(device)
    metrics.update(clip_score(images.to(device), tokens, clip))
    real_tokens = tokenize(real_captions, context_length=clip.max_text_len, truncate=True).to(device)
    real_embeds = clip.embed_image(real_images.to(device)).image_embed
    prior_metrics = evaluate_prior(pipeline.prior, real_embeds, text=real_tokens,
                                   cond_scale=defaults.prior_cond_scale, timesteps=defaults.prior_steps,
                                   sampler=defaults.prior_sampler, generator=generator)
    metrics.update({f"prior_{name}": value for name, value in prior_metrics.items()})
    metrics.update({"num_images": len(captions), "seconds": round(time.perf_counter() - started, 1)})
    return metrics

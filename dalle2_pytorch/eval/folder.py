"""Evaluate a pipeline on any captioned image folder: the function behind ``dalle2 eval --images DIR``.

The pipeline draws ``images_per_caption`` images for (up to ``max_captions`` of) the folder's distinct captions,
preferring captions that have several real images.  Scores:

* ``clip_score`` (and ``_unrelated``, ``_gap``) by the pipeline's own CLIP, with ``real_clip_score`` for the folder's
  images of the same captions as the ceiling to compare with;
* ``fid``, ``kid_mean``, ``kid_std`` against the folder's images, in the feature space of the pipeline's CLIP image
  encoder (``features="clip"``, needs no download) or Inception-v3 (``"inception"``, needs torch-fidelity);
* ``diversity``: per caption, the mean pairwise distance in pixels between its generated images divided by the same
  for its real images (1 = as varied as the data, below 1 = less varied), averaged over captions with >= 2 real
  images; ``diversity_clip`` measures the distances between CLIP image embeddings instead (a CLIP trained on few
  captions maps the real images of one caption close together, so this ratio runs high);
* ``faithfulness`` (the toy judge) when every caption is a toy-shapes caption.

The knobs that trade faithfulness for diversity can be set for the run: ``cond_scale`` (decoder guidance, unet 1),
``prior_num_samples`` (the prior's rerank count) and ``eta`` (DDIM noise, with ``sampler="ddim"``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from dalle2_pytorch.eval.clip_score import clip_score
from dalle2_pytorch.eval.features import ClipImageFeatures
from dalle2_pytorch.eval.image_metrics import image_quality
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness

FOLDER_FEATURES = ("clip", "inception")


def mean_pairwise_distance(vectors: torch.Tensor) -> float:
    """Mean Euclidean distance over the distinct pairs of rows of ``vectors`` (n >= 2), per feature dimension."""
    flat = vectors.flatten(1).double()
    distances = torch.cdist(flat, flat)
    n = flat.shape[0]
    return (distances.sum() / (n * (n - 1))).item() / flat.shape[1] ** 0.5


def diversity_ratio(generated: dict[str, torch.Tensor], real: dict[str, torch.Tensor]) -> Optional[float]:
    """Mean over captions (with >= 2 generated and >= 2 real items) of generated spread / real spread."""
    ratios = []
    for caption, made in generated.items():
        truth = real.get(caption)
        if truth is None or len(truth) < 2 or len(made) < 2:
            continue
        spread = mean_pairwise_distance(truth)
        if spread > 0:
            ratios.append(mean_pairwise_distance(made) / spread)
    return sum(ratios) / len(ratios) if ratios else None


def _choose_captions(captions: list[str], max_captions: int) -> list[str]:
    counts: dict[str, int] = {}
    for caption in captions:
        counts[caption] = counts.get(caption, 0) + 1
    return sorted(counts, key=lambda c: (-min(counts[c], 2), c))[:max_captions]


@torch.no_grad()
def evaluate_folder(checkpoint_dir: str | Path, images_dir: str | Path, *, images_per_caption: int = 4,
                    max_captions: int = 32, max_real_images: int = 512, features: str = "clip", seed: int = 0,
                    cond_scale: Optional[float] = None, prior_num_samples: Optional[int] = None,
                    eta: Optional[float] = None, sampler: Optional[str] = None, steps: Optional[int] = None,
                    say: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Generate for the folder's captions and score against its images; returns a flat dict (see the module)."""
    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.data import ImagePreprocessor, load_image, parse_caption
    from dalle2_pytorch.data.image_folder import scan_captioned_folder

    for name, value, low in (("images_per_caption", images_per_caption, 2), ("max_captions", max_captions, 1),
                             ("max_real_images", max_real_images, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if features not in FOLDER_FEATURES:
        raise ValueError(f"features must be one of {FOLDER_FEATURES}, got {features!r}")
    if eta is not None and not 0 <= eta <= 1:
        raise ValueError(f"eta={eta}: the DDIM noise scale lies in [0, 1]")
    say = say or (lambda message: None)
    started = time.perf_counter()
    pipeline = DALLE2.from_pretrained(checkpoint_dir).eval()
    clip = pipeline.prior.clip
    image_size = int(pipeline.decoder.image_sizes[-1])

    scan = scan_captioned_folder(images_dir)
    keep = torch.randperm(len(scan.files), generator=torch.Generator().manual_seed(seed))[:max_real_images].tolist()
    preprocess = ImagePreprocessor(image_size=image_size)
    real_images = torch.stack([preprocess(load_image(scan.files[i])) for i in keep])
    real_captions = [scan.captions[i] for i in keep]
    chosen = _choose_captions(real_captions, max_captions)
    captions = [c for c in chosen for _ in range(images_per_caption)]

    settings: dict[str, Any] = {"sampler": sampler, "steps": steps}
    if cond_scale is not None:
        settings["cond_scale"] = pipeline.sampling_defaults.with_first_unet_guidance(cond_scale,
                                                                                     pipeline.decoder.num_unets)
    saved_rerank, saved_options = pipeline.prior_num_samples, pipeline.decoder.options
    if prior_num_samples is not None:
        if prior_num_samples < 1:
            raise ValueError(f"prior_num_samples={prior_num_samples}: expected at least 1")
        pipeline.prior_num_samples = prior_num_samples
    if eta is not None:
        pipeline.decoder.options = dataclasses.replace(saved_options, ddim_sampling_eta=float(eta))
    say(f"generating {len(captions)} images for {len(chosen)} captions of {images_dir}")
    try:
        images = pipeline(captions, generator=torch.Generator().manual_seed(seed), **settings).float().cpu()
    finally:
        pipeline.prior_num_samples, pipeline.decoder.options = saved_rerank, saved_options

    say(f"scoring against {len(real_images)} images of the folder")
    metrics: dict[str, Any] = dict(clip_score(images, captions, clip))
    in_chosen = [i for i, c in enumerate(real_captions) if c in set(chosen)]
    if len(in_chosen) >= 2:
        metrics["real_clip_score"] = clip_score(real_images[in_chosen], [real_captions[i] for i in in_chosen],
                                                clip)["clip_score"]
    if features == "clip":
        extractor = ClipImageFeatures(clip)
    else:
        from dalle2_pytorch.eval.features import InceptionFeatures

        extractor = InceptionFeatures()
    metrics.update(image_quality(real_images, images, feature_extractor=extractor,
                                 kid_subset_size=min(100, len(images), len(real_images))))
    embed = ClipImageFeatures(clip)
    real_embeds, made_embeds = embed(real_images), embed(images)

    def grouped(values: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        return {c: values[[i for i, n in enumerate(names) if n == c]] for c in chosen if c in names}

    metrics["diversity"] = diversity_ratio(grouped(images, captions), grouped(real_images, real_captions))
    metrics["diversity_clip"] = diversity_ratio(grouped(made_embeds, captions), grouped(real_embeds, real_captions))
    if all({"colour", "shape"} <= set(parse_caption(c)) for c in chosen):
        metrics.update(toy_faithfulness(images, captions, attributes=("colour", "shape")))
    metrics.update({"num_images": len(captions), "num_captions": len(chosen), "num_real_images": len(real_images),
                    "num_unreadable": len(scan.unreadable), "seconds": round(time.perf_counter() - started, 1)})
    return metrics

"""Evaluate a saved text-to-image pipeline on the toy shapes set: the function behind ``dalle2 eval``.

The checkpoint directory has the layout ``dalle2 demo`` writes: ``clip/``, ``prior/`` and ``decoder/`` (each a
``save_pretrained`` directory) and optionally ``sampling.json`` (the sampler settings to use).  The pipeline draws
images for every toy caption; the result holds toy faithfulness, FID and KID against real toy images, the CLIP score
(by the checkpoint's own CLIP) and the prior's cosine metrics on real toy images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from dalle2_pytorch.eval.clip_score import clip_score
from dalle2_pytorch.eval.features import ClipImageFeatures, RandomConvFeatures
from dalle2_pytorch.eval.image_metrics import image_quality
from dalle2_pytorch.eval.prior_metrics import evaluate_prior
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness

FEATURE_CHOICES = ("random", "clip")
STAGES = ("clip", "prior", "decoder")


def _load_stages(directory: Path) -> dict[str, Any]:
    from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
    from dalle2_pytorch.clip.model import CLIP
    from dalle2_pytorch.decoder import Decoder
    from dalle2_pytorch.prior import DiffusionPrior

    missing = [stage for stage in STAGES if not (directory / stage).is_dir()]
    if missing:
        raise ValueError(f"checkpoint_dir={str(directory)!r} lacks {missing}: expected the `dalle2 demo` layout "
                         f"with sub-directories {list(STAGES)} (each written by save_pretrained)")
    clip = CLIP.from_pretrained(directory / "clip").eval()
    return {"clip": BuiltinClipAdapter(clip), "prior": DiffusionPrior.from_pretrained(directory / "prior").eval(),
            "decoder": Decoder.from_pretrained(directory / "decoder").eval()}


def _sampling_settings(directory: Path) -> dict[str, dict]:
    path = directory / "sampling.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    return {"prior": settings.get("prior", {}), "decoder": settings.get("decoder", {})}


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
    from dalle2_pytorch.data import ToyShapesDataset

    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} is not a directory")
    for name, value, low in (("images_per_caption", images_per_caption, 1), ("num_real_images", num_real_images, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if features not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    say = say or (lambda message: None)
    started = time.perf_counter()
    stages = _load_stages(directory)
    clip, prior, decoder = stages["clip"].to(device), stages["prior"].to(device), stages["decoder"].to(device)
    settings = _sampling_settings(directory)
    image_size = decoder.image_sizes[-1] if hasattr(decoder, "image_sizes") else clip.image_size
    dataset = ToyShapesDataset(num_samples=num_real_images, image_size=int(image_size), seed=1)
    captions = [caption for caption in dataset.all_captions() for _ in range(images_per_caption)]
    generator = torch.Generator().manual_seed(seed)

    say(f"generating {len(captions)} images for {len(captions) // images_per_caption} toy captions")
    tokens = tokenize(captions, context_length=clip.max_text_len, truncate=True).to(device)
    p, d = settings["prior"], settings["decoder"]
    image_embed = prior.sample(tokens, num_samples_per_batch=2, cond_scale=p.get("cond_scale", 1.0),
                               timesteps=p.get("steps"), sampler=p.get("sampler"), generator=generator)
    images = decoder.sample(image_embed=image_embed, cond_scale=d.get("cond_scale", 1.0), sampler=d.get("sampler"),
                            steps=d.get("steps"), generator=generator).float().cpu()

    say(f"scoring against {num_real_images} real toy images")
    real_images, real_captions, _ = dataset.render_range()
    extractor = ClipImageFeatures(clip) if features == "clip" else RandomConvFeatures(image_size=int(image_size))
    metrics: dict[str, Any] = dict(toy_faithfulness(images, captions))
    metrics.update(image_quality(real_images, images, feature_extractor=extractor.to("cpu"),
                                 kid_subset_size=min(100, len(captions), num_real_images)))
    metrics.update(clip_score(images.to(device), tokens, clip))
    real_tokens = tokenize(real_captions, context_length=clip.max_text_len, truncate=True).to(device)
    real_embeds = clip.embed_image(real_images.to(device)).image_embed
    prior_metrics = evaluate_prior(prior, real_embeds, text=real_tokens, cond_scale=p.get("cond_scale", 1.0),
                                   timesteps=p.get("steps"), sampler=p.get("sampler"), generator=generator)
    metrics.update({f"prior_{name}": value for name, value in prior_metrics.items()})
    metrics.update({"num_images": len(captions), "seconds": round(time.perf_counter() - started, 1)})
    return metrics

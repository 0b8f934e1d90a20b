"""The built-in toy pipeline behind `dalle2 demo`: CLIP -> diffusion prior -> two-unet decoder on coloured shapes.

A demo is a small config file (``configs/toy_demo.json``, ``configs/toy_tiny_demo.json``) that names one training
config per stage (``configs/toy_clip.json``, ...).  Each stage is trained by the same config-driven
:class:`~dalle2_pytorch.runs.loop.TrainingRun` as ``dalle2 train`` (its run folder is ``<out>/training/<stage>``),
saved with ``save_pretrained`` under ``<out>/checkpoints/<stage>`` and reused by a rerun whose stage configs have not
changed.  The prior and decoder use the freshly trained CLIP.  Then the :class:`DALLE2` pipeline writes images for
a few captions with the sampling settings of the stage configs' ``evaluation`` sections, one captioned grid, and the
share of images that the pixel judge reads as their caption.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from pydantic import Field

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data import ToyShapesDataset, faithfulness, judge_image
from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.pipeline_files import SamplingDefaults
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.serialization import save_json
from dalle2_pytorch.runs.config_base import ConfigError, StrictModel, read_config_file, validate_config
from dalle2_pytorch.runs.configs import config_class
from dalle2_pytorch.images import caption_slug, save_captioned_grid, save_image
from dalle2_pytorch.runs.stages import (Threads, fingerprint, forget_stages, load_or_train, model_part,
                                        sampling_settings, save_pipeline, train_stage)

JUDGED = ("colour", "shape")
STAGES = ("clip", "prior", "decoder")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # package data (in a checkout: a link to configs/)
PRESETS = {"small": "toy_demo.json", "tiny": "toy_tiny_demo.json"}


class DemoConfig(StrictModel):
    """A demo: one training config per stage (paths relative to this file) and what to generate afterwards."""

    kind: Literal["demo"] = "demo"
    name: str = Field(description="shown in the output and results.json")
    clip: str = Field(description="training config of the CLIP")
    prior: str = Field(description="training config of the prior (its model.clip becomes the trained CLIP)")
    decoder: str = Field(description="training config of the decoder (its model.clip becomes the trained CLIP)")
    captions: Optional[list[str]] = Field(None, description="captions to draw; None: every caption of the toy set")
    images_per_caption: int = Field(4, gt=0)
    prior_num_samples: int = Field(2, gt=0, description="DALLE2: candidate image embeddings per caption")
    seed: int = 0


def demo_config_path(preset: str) -> Path:
    """The demo file of a preset name (``configs/toy_demo.json`` for ``small``)."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {sorted(PRESETS)}, or give a demo config file")
    path = CONFIG_DIR / PRESETS[preset]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the example configs are package data of dalle2_pytorch; "
                                "reinstall the package")
    return path


def load_demo(path: str | Path) -> tuple[DemoConfig, dict[str, dict[str, Any]]]:
    """The demo file and the raw dict of each stage's training config (validated with its kind's config)."""
    path = Path(path)
    demo = validate_config(DemoConfig, read_config_file(path), str(path))
    stages = {}
    for stage in STAGES:
        stage_path = path.parent / getattr(demo, stage)
        data = read_config_file(stage_path)
        if data.get("kind") != stage:
            raise ConfigError(f"{path}: {stage}={getattr(demo, stage)!r} is a {data.get('kind')!r} config, "
                              f"not a {stage!r} one")
        validate_config(config_class(stage), data, str(stage_path))
        stages[stage] = data
    return demo, stages


def run_demo(preset: str | Path = "small", out: str | Path = "outputs", *, retrain: bool = False,
             threads: int = 1, say: Callable[[str], None] = print) -> dict:
    """Train (or reuse) the three stages, generate, judge; returns the summary also written to ``results.json``.

    ``preset``: ``small``/``tiny`` or the path of a demo config file.  ``threads``: torch CPU threads.  One is the
    default: these models are so small that more threads mostly add synchronisation, and on a busy machine spinning
    threads slow a run down many times over."""
    threads_context = Threads(threads)
    path = demo_config_path(preset) if str(preset) in PRESETS else Path(preset)
    demo, stages = load_demo(path)
    with threads_context:
        return _run_demo(demo, stages, Path(out), retrain, say)


def _run_demo(demo: DemoConfig, stages: dict[str, dict[str, Any]], out: Path, retrain: bool,
              say: Callable[[str], None]) -> dict:
    checkpoints = out / "checkpoints"
    started = time.perf_counter()
    say(f"dalle2 demo, preset {demo.name!r}: training " + ", ".join(f"{s} ({getattr(demo, s)})" for s in STAGES))
    if retrain:
        forget_stages([checkpoints / stage for stage in STAGES])

    clip_print = fingerprint(model_part(stages["clip"]))
    clip = load_or_train("clip", checkpoints / "clip", clip_print, CLIP,
                          lambda: train_stage("clip", stages["clip"], out), say)
    del clip  # the prior and decoder load their own frozen copies from its folder
    fingerprints = {s: fingerprint(clip_print, model_part({**stages[s], "model": {**stages[s]["model"],
                                                                                    "clip": None}}))
                    for s in ("prior", "decoder")}
    prior = load_or_train("prior", checkpoints / "prior", fingerprints["prior"], DiffusionPrior,
                           lambda: train_stage("prior", stages["prior"], out, clip_dir=checkpoints / "clip"), say)
    decoder = load_or_train("decoder", checkpoints / "decoder", fingerprints["decoder"], Decoder,
                             lambda: train_stage("decoder", stages["decoder"], out, clip_dir=checkpoints / "clip"),
                             say)

    sampling = SamplingDefaults.from_dict(sampling_settings(stages), source="the demo's evaluation settings")
    image_size = int(decoder.image_sizes[-1])
    distinct = list(demo.captions) if demo.captions is not None else \
        ToyShapesDataset(num_samples=1, image_size=image_size).all_captions()
    captions = [c for c in distinct for _ in range(demo.images_per_caption)]
    say(f"generating {len(captions)} images for {len(distinct)} captions")
    pipeline = DALLE2(prior=prior, decoder=decoder, prior_num_samples=demo.prior_num_samples, sampling=sampling)
    save_pipeline(pipeline, checkpoints)
    with torch.no_grad():
        images = pipeline(captions, generator=torch.Generator().manual_seed(demo.seed + 1))   # the saved defaults
    image_dir = out / "images"
    for stale in image_dir.glob("*.png"):  # from an earlier run, possibly of another preset
        stale.unlink()
    readings = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        save_image(image, image_dir / f"{i:03d}_{caption_slug(caption)}.png")
        seen = judge_image(image)
        readings.append({"caption": caption, "seen": f"{seen.colour} {seen.shape}",
                         "match": seen.colour in caption.split() and seen.shape in caption.split()})
    score = faithfulness(images, captions, attributes=JUDGED)
    grid_path = save_captioned_grid(images, [f"{c}{'' if r['match'] else ' (x)'}" for c, r in zip(captions, readings)],
                                    out / "grid.png", columns=2 * demo.images_per_caption)
    summary = {"preset": demo.name, "faithfulness": score, "num_images": len(captions),
               "seconds": round(time.perf_counter() - started, 1), "grid": str(grid_path),
               "images": str(image_dir), "judged": list(JUDGED), "readings": readings}
    save_json(summary, out / "results.json")
    say(f"wrote {len(captions)} images to {image_dir} and the grid {grid_path}")
    say(f"faithfulness (colour and shape as read by the pixel judge): {score:.1%} "
        f"in {summary['seconds']:.0f} s")
    return summary

"""Sizes and step counts of the built-in toy pipeline (`dalle2 demo`), one preset per use.

* ``tiny``: seconds; proves the wiring end to end (the CLI test runs it), images are not expected to be faithful.
* ``small``: the default; a few minutes on two CPU cores, tuned so that most generated images match their caption.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClipStage:
    dim: int  # width of both towers
    dim_latent: int
    depth: int
    heads: int
    dim_head: int
    patch_size: int
    steps: int
    lr: float
    copies_per_caption: int  # a batch holds every caption this many times (a fresh image each time)


@dataclass(frozen=True)
class PriorStage:
    depth: int
    heads: int
    dim_head: int
    timesteps: int
    steps: int
    lr: float
    batch_size: int
    cond_drop_prob: float
    sample_steps: int
    cond_scale: float


@dataclass(frozen=True)
class DecoderStage:
    dims: tuple[int, int]  # base width of unet 1 and unet 2
    timesteps: int
    steps: tuple[int, int]  # training steps of unet 1 and unet 2
    lr: float
    batch_size: int
    image_cond_drop_prob: float
    sampler: str
    sample_steps: tuple[int, int]
    cond_scale: tuple[float, float]


@dataclass(frozen=True)
class DemoPreset:
    name: str
    image_size: int  # final size (unet 2); unet 1 works at half of it
    num_train_images: int  # rendered once, kept in memory
    clip: ClipStage
    prior: PriorStage
    decoder: DecoderStage
    captions: tuple[str, ...] | None = None  # None: every caption of the toy set (18)
    images_per_caption: int = 4
    seed: int = 0

    def stage_fingerprint(self, stage: str) -> str:
        """Hash of everything a stage's checkpoint depends on: a rerun with the same values reuses it."""
        parts = {"clip": [self.image_size, self.num_train_images, self.seed, asdict(self.clip)]}
        parts["prior"] = parts["clip"] + [asdict(self.prior)]
        parts["decoder"] = parts["clip"] + [asdict(self.decoder)]
        return hashlib.sha256(json.dumps(parts[stage], sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, DemoPreset] = {
    "tiny": DemoPreset(
        name="tiny", image_size=16, num_train_images=144,
        clip=ClipStage(dim=32, dim_latent=16, depth=1, heads=2, dim_head=16, patch_size=4, steps=8, lr=2e-3,
                       copies_per_caption=1),
        prior=PriorStage(depth=1, heads=2, dim_head=8, timesteps=50, steps=8, lr=2e-3, batch_size=32,
                         cond_drop_prob=0.1, sample_steps=4, cond_scale=1.0),
        decoder=DecoderStage(dims=(8, 8), timesteps=50, steps=(6, 6), lr=2e-3, batch_size=8,
                             image_cond_drop_prob=0.1, sampler="ddim", sample_steps=(4, 4), cond_scale=(1.0, 1.0)),
        captions=("a red circle", "a blue square"), images_per_caption=2),
    "small": DemoPreset(
        name="small", image_size=32, num_train_images=2304,
        clip=ClipStage(dim=64, dim_latent=32, depth=2, heads=4, dim_head=16, patch_size=4, steps=300, lr=1.5e-3,
                       copies_per_caption=2),
        prior=PriorStage(depth=2, heads=4, dim_head=16, timesteps=100, steps=600, lr=2e-3, batch_size=128,
                         cond_drop_prob=0.1, sample_steps=16, cond_scale=1.0),
        decoder=DecoderStage(dims=(32, 16), timesteps=100, steps=(800, 300), lr=2e-3, batch_size=32,
                             image_cond_drop_prob=0.1, sampler="dpmpp_2m", sample_steps=(20, 10),
                             cond_scale=(3.0, 1.0))),
}


def get_preset(name: str) -> DemoPreset:
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: choose one of {sorted(PRESETS)}")
    return PRESETS[name]

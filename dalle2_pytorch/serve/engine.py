"""The model behind the server: a small protocol, and its adapter for a saved :class:`DALLE2`.

The server only needs ``generate(prompts, seeds, settings, progress) -> PIL images`` plus a description
of what the model accepts; :class:`DALLE2Engine` provides both for a DALLE2 pipeline.  Every image is
drawn from its own generator seeded with its own seed (``dalle2_pytorch.diffusion.RowGenerators``), so an image depends on
its prompt, seed and settings only, never on the other images in its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union

import torch

from dalle2_pytorch.dalle2 import DALLE2, SamplingDefaults
from dalle2_pytorch.diffusion import RowGenerators
from dalle2_pytorch.diffusion.samplers import SAMPLERS
from dalle2_pytorch.karlo import KarloPipeline

Progress = Callable[[float], None]  # fraction of the batch's sampling done, in [0, 1]


@dataclass(frozen=True)
class Settings:
    """Sampling settings shared by every image of a batch (``None`` = the checkpoint's default)."""

    cond_scale: Optional[float] = None  # decoder guidance (first unet; upsamplers keep their default)
    prior_cond_scale: Optional[float] = None
    sampler: Optional[str] = None  # decoder sampler
    steps: Optional[int] = None  # decoder steps, every unet


class ImageEngine(Protocol):
    """What the server needs from a model."""

    def describe(self) -> dict[str, Any]:
        """JSON-able facts the page and ``/v1/health`` show: samplers, step limit, image size, defaults."""

    def check(self, settings: Settings) -> list[tuple[str, str]]:
        """Problems with ``settings`` for this model, as (field, message); empty when fine."""

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], settings: Settings,
                 progress: Optional[Progress] = None) -> list:
        """One PIL image per (prompt, seed)."""


class DALLE2Engine:
    """Serves a :class:`DALLE2`: its prior picks image embeddings, its decoder cascade paints them.

    A setting a request leaves out comes from the pipeline's ``sampling_defaults`` (saved in its
    ``pipeline.json``).  ``defaults`` (a :class:`SamplingDefaults` or its ``{"prior": {...}, "decoder": {...}}``
    form), when given, replaces them on ``dalle2``.
    """

    def __init__(self, dalle2: Union[DALLE2, KarloPipeline], *,
                 defaults: Optional[Union[SamplingDefaults, Mapping[str, Any]]] = None) -> None:
        if not isinstance(dalle2, (DALLE2, KarloPipeline)):
            raise TypeError(f"dalle2 must be a DALLE2 or a KarloPipeline, got {type(dalle2).__name__}")
        self.dalle2 = dalle2.eval()
        if defaults is not None:
            self.dalle2.sampling_defaults = defaults
        self.num_unets = dalle2.decoder.num_unets

    @classmethod
    def from_checkpoint(cls, directory: str | Path, *, device: str | torch.device | None = None) -> "DALLE2Engine":
        """Load a pipeline folder with :meth:`DALLE2.from_pretrained` (every layout it reads, defaults included).

        ``device``: where the model runs (e.g. ``"cuda"``); it stays on the CPU when None.  Noise is always
        drawn on the CPU from each image's seed, so a seed gives the same noise on every device."""
        dalle2 = DALLE2.from_pretrained(directory)
        return cls(dalle2 if device is None else dalle2.to(device))

    @property
    def defaults(self) -> SamplingDefaults:
        """The pipeline's sampling defaults (what a request's missing settings become)."""
        return self.dalle2.sampling_defaults

    # ------------------------------------------------------------------ what the model accepts
    @property
    def max_steps(self) -> int:
        return min(int(schedule.num_timesteps) for schedule in self.dalle2.decoder.schedules)

    def describe(self) -> dict[str, Any]:
        decoder, prior = self.dalle2.decoder, self.dalle2.prior
        return {"model": "DALLE2", "image_size": int(decoder.image_sizes[-1]), "num_unets": self.num_unets,
                "samplers": sorted(SAMPLERS), "max_steps": self.max_steps,
                "decoder_guidance": bool(decoder.can_classifier_guidance),
                "prior_guidance": bool(prior.can_classifier_guidance),
                "defaults": {"cond_scale": self.defaults.per_unet("cond_scale", self.num_unets)[0],
                             "prior_cond_scale": self.defaults.prior_cond_scale,
                             "sampler": self.defaults.per_unet("sampler", self.num_unets)[0],
                             "steps": self.defaults.per_unet("steps", self.num_unets)[0]}}

    def check(self, settings: Settings) -> list[tuple[str, str]]:
        problems = []
        if settings.steps is not None and settings.steps > self.max_steps:
            problems.append(("steps", f"steps={settings.steps} is more than this model's {self.max_steps} "
                                      "training timesteps"))
        if settings.cond_scale not in (None, 1.0) and not self.dalle2.decoder.can_classifier_guidance:
            problems.append(("cond_scale", f"cond_scale={settings.cond_scale}: this decoder was trained without "
                                           "classifier-free guidance; use 1"))
        if settings.prior_cond_scale not in (None, 1.0) and not self.dalle2.prior.can_classifier_guidance:
            problems.append(("prior_cond_scale", f"prior_cond_scale={settings.prior_cond_scale}: this prior was "
                                                 "trained without classifier-free guidance; use 1"))
        return problems

    # ------------------------------------------------------------------ sampling
    def _overrides(self, settings: Settings) -> dict[str, Any]:
        """The request's settings as DALLE2 keywords (None = the pipeline's default); guidance replaces unet 1's."""
        cond_scale = None if settings.cond_scale is None else \
            self.defaults.with_first_unet_guidance(settings.cond_scale, self.num_unets)
        return {"cond_scale": cond_scale, "prior_cond_scale": settings.prior_cond_scale,
                "sampler": settings.sampler, "steps": settings.steps}

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], settings: Settings,
                 progress: Optional[Progress] = None) -> list:
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError(f"need one seed per prompt and at least one prompt; got {len(prompts)} prompts and "
                             f"{len(seeds)} seeds")
        generators = RowGenerators.from_seeds(seeds)
        stages = 1 + self.num_unets
        report = progress or (lambda fraction: None)

        def on_decoder_step(info: dict) -> None:  # the prior is stage 0: done once the decoder steps
            done = info["unet_number"] + (info["i"] + 1) / max(1, info["total"])
            report(min(1.0, done / stages))

        images = self.dalle2(list(prompts), return_pil_images=True, generator=generators, callback=on_decoder_step,
                             **self._overrides(settings))
        report(1.0)
        return images

"""Sampling one unet of the cascade with any sampler of the diffusion core.

The unet (with classifier-free guidance, self-conditioning and learned variance) is wrapped into a
``ModelDenoiser``; the core's ``sample_loop`` (or ``repaint_sample_loop`` for inpainting) does the
rest.  Everything here works in the unet's own space (normalised pixels or VAE latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, dynamic_threshold, repaint_sample_loop,
                                      resolve_sampler, sample_loop, static_clamp, variance_frac)
from dalle2_pytorch.decoder.stage_loss import split_unet_output

Callback = Optional[Callable[[dict[str, Any]], None]]


@dataclass(frozen=True)
class SamplerChoice:
    """Which sampler runs a stage and with how many steps (``steps=None``: the sampler's default)."""

    sampler: str
    steps: Optional[int]
    eta: float


def choose_sampler(sampler: Optional[str], steps: Optional[int], *, sample_timesteps: Optional[int],
                   ddim_sampling_eta: float) -> SamplerChoice:
    """Defaults as in the reference: full ancestral DDPM, or DDIM when ``sample_timesteps`` is set."""
    if sampler is None:
        sampler = "ddpm" if sample_timesteps is None and steps is None else "ddim"
    name = resolve_sampler(sampler)
    if steps is None:
        steps = sample_timesteps
    return SamplerChoice(name, steps, ddim_sampling_eta if name == "ddim" else 0.0)


def x0_transform_for(*, latent: bool, use_dynamic_thres: bool, dynamic_thres_percentile: float
                     ) -> Optional[Callable[[Tensor], Tensor]]:
    """Pixel-space unets clip their x0 estimate (statically, or Imagen's dynamic threshold); latents are left free."""
    if latent:
        return None
    if use_dynamic_thres:
        return lambda x0: dynamic_threshold(x0, dynamic_thres_percentile)
    return static_clamp


def make_denoiser(*, unet: nn.Module, schedule: NoiseSchedule, objective: str, learned_variance: bool,
                  constrain_frac: bool, cond_scale: float, unet_kwargs: dict[str, Any],
                  x0_transform: Optional[Callable[[Tensor], Tensor]]) -> ModelDenoiser:
    """Wrap a (guided) unet as a core denoiser."""

    def model_fn(x_t: Tensor, t: Tensor, self_cond: Optional[Tensor] = None):
        extra = {"self_cond": self_cond} if getattr(unet, "self_cond", False) else {}
        output = unet.forward_with_cond_scale(x_t, t, cond_scale=cond_scale, **unet_kwargs, **extra)
        prediction, raw_variance = split_unet_output(output, learned_variance)
        if raw_variance is None:
            return prediction
        return prediction, variance_frac(raw_variance, constrain=constrain_frac)

    return ModelDenoiser(model_fn, schedule, objective, x0_transform=x0_transform,
                         self_condition=bool(getattr(unet, "self_cond", False)))


@torch.no_grad()
def sample_stage(denoiser: ModelDenoiser, shape: tuple[int, ...], choice: SamplerChoice, *,
                 generator: Optional[torch.Generator], callback: Callback, device: torch.device,
                 inpaint: Optional[tuple[Tensor, Tensor]] = None, inpaint_resample_times: int = 5) -> Tensor:
    """x0 samples of ``shape``; ``inpaint=(known, mask)`` runs RePaint with the known region kept."""
    if inpaint is None:
        return sample_loop(denoiser, shape, sampler=choice.sampler, steps=choice.steps, eta=choice.eta,
                           generator=generator, callback=callback, device=device)
    if choice.sampler != "ddpm":
        raise ValueError(f"inpainting uses RePaint, an ancestral (ddpm) sampler; got sampler={choice.sampler!r}. "
                         "Leave sampler=None or pass sampler='ddpm' (steps= still applies)")
    known, mask = inpaint
    return repaint_sample_loop(denoiser, shape, known, mask, resample_times=inpaint_resample_times,
                               steps=choice.steps, generator=generator, callback=callback, device=device)

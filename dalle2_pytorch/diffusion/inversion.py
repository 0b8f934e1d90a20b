"""DDIM inversion: the starting noise from which deterministic DDIM reaches a given x0.

Deterministic DDIM (η = 0) maps noise to data one step at a time, x_s = D(x_t) + σ_s (x_t − D(x_t)) / σ_t.
Inversion runs the σ's upwards and solves each step for its start: x_t = x_s + (σ_t − σ_s) ε̂(x_t, σ_t),
with ε̂(x, σ) = (x − D(x, σ)) / σ.  The usual inversion (Song et al. 2021; Mokady et al. 2023) takes ε̂
at the known point x_s, an error of one step each time; here that guess is refined by a few fixed-point
iterations on the equation itself, which brings the round trip much closer (tested in
``tests/diffusion/test_inversion.py``).  The result is in the standard-normal scale that
:func:`~dalle2_pytorch.diffusion.samplers.sample_loop` takes as ``noise=``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.denoiser import ModelDenoiser, denoise_step
from dalle2_pytorch.diffusion.samplers import default_sampler, sampling_sigmas

DEFAULT_FIXED_POINT_ITERS = 3


def inversion_sigmas(denoiser: ModelDenoiser, steps: int, spacing: str = "trailing") -> Tensor:
    """The descending σ's (ending with 0) that both :func:`ddim_invert` and the DDIM reconstruction use.

    A zero-SNR schedule's σ = ∞ cannot be reached by inversion; its last finite level is the top here."""
    _, steps = default_sampler("ddim", steps, sample_timesteps=None, num_timesteps=denoiser.schedule.num_timesteps)
    return sampling_sigmas(denoiser.schedule, steps, spacing, include_infinite=False)


@torch.no_grad()
def ddim_invert(denoiser: ModelDenoiser, x0: Tensor, sigmas: Tensor, *,
                fixed_point_iters: int = DEFAULT_FIXED_POINT_ITERS) -> Tensor:
    """Noise (standard-normal scale) that deterministic DDIM over ``sigmas`` (descending, ending with 0)
    turns back into ``x0``; ``fixed_point_iters`` refinements per step (0: the classic inversion)."""
    if isinstance(fixed_point_iters, bool) or not isinstance(fixed_point_iters, int) or fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be a non-negative integer, got {fixed_point_iters!r}")
    sigmas = sigmas.to(x0.device).float()
    if sigmas[-1] != 0 or not torch.isfinite(sigmas).all() or (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must be finite, strictly descending and end with 0 (see inversion_sigmas)")
    ascending = sigmas.flip(0)
    x = x0.float()
    for i in range(len(ascending) - 1):
        s, t = ascending[i], ascending[i + 1]
        guess_level = s if s > 0 else t  # at σ = 0 the known point is the data itself
        eps = (x - denoise_step(denoiser, x, guess_level).x0) / guess_level
        y = x + (t - s) * eps
        for _ in range(fixed_point_iters):
            y = x + (t - s) * (y - denoise_step(denoiser, y, t).x0) / t
        x = y
    return x / (1 + ascending[-1] ** 2).sqrt()

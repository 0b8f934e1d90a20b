"""RePaint inpainting (Lugmayr et al. 2022) over any denoiser.

At every step the known region is replaced by the known image noised to the current level,
and each step is repeated ``resample_times`` times by re-noising back up, which lets the
generated region harmonise with the known one.  The output equals ``known`` exactly where
``mask`` is 1.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.denoiser import ModelDenoiser, denoise_step
from dalle2_pytorch.diffusion.noise import randn
from dalle2_pytorch.diffusion.samplers import Callback, _report, ancestral_step, default_sampler, sampling_sigmas


@torch.no_grad()
def repaint_sample_loop(denoiser: ModelDenoiser, shape: tuple[int, ...] | torch.Size, known: Tensor, mask: Tensor, *,
                        resample_times: int = 5, steps: Optional[int] = None,
                        generator: Optional[torch.Generator] = None, callback: Callback = None,
                        device: torch.device | str | None = None) -> Tensor:
    """Sample ``shape`` with the region where ``mask`` is 1 (broadcastable to ``shape``) fixed to ``known``."""
    if not isinstance(resample_times, int) or resample_times < 1:
        raise ValueError(f"resample_times must be a positive integer, got {resample_times!r}")
    schedule = denoiser.schedule
    device = device if device is not None else schedule.betas.device
    _, steps = default_sampler("ddpm", steps, sample_timesteps=None, num_timesteps=schedule.num_timesteps)
    sigmas = sampling_sigmas(schedule, steps, "trailing", include_infinite=False).to(device)
    known = known.to(device).float()
    mask = mask.to(device).float().expand(shape)
    x = randn(tuple(shape), generator=generator, device=device) * (1 + sigmas[0] ** 2).sqrt()
    total = len(sigmas) - 1
    self_cond: Optional[Tensor] = None  # the previous x0 estimate, for self-conditioning networks
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for r in range(resample_times):
            known_noisy = known + sigma * randn(x.shape, generator=generator, device=device)
            x = mask * known_noisy + (1 - mask) * x
            denoised = self_cond = denoise_step(denoiser, x, sigma, self_cond).x0
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, 1.0)
            x = denoised + sigma_down * (x - denoised) / sigma
            if sigma_up > 0:
                x = x + sigma_up * randn(x.shape, generator=generator, device=device)
            if r < resample_times - 1 and sigma_next > 0:
                x = x + (sigma ** 2 - sigma_next ** 2).sqrt() * randn(x.shape, generator=generator, device=device)
        _report(callback, i, total, x, sigma, denoised)
    return mask * known + (1 - mask) * x

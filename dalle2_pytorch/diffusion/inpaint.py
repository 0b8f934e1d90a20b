"""Inpainting over any denoiser: known-region replacement with every sampler, and RePaint.

Both keep a known image where ``mask`` is set.  :func:`inpaint_loop` works with every sampler of
:mod:`~dalle2_pytorch.diffusion.samplers`: the denoiser is wrapped (:class:`KnownRegionDenoiser`) so
that before every network evaluation the known region of its input is the known image noised to that
evaluation's level, σ; the samplers update every element on its own, so this is the same as replacing
the region in the sampler's state.  ``resample_times > 1`` adds RePaint's resampling (each step is
repeated after re-noising back up, which harmonises the generated region with the known one).
:func:`repaint_sample_loop` is RePaint proper (Lugmayr et al. 2022) on the ancestral DDPM sampler.
Both outputs equal ``known`` exactly where ``mask`` is set.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.denoiser import Denoised, ModelDenoiser, denoise_step
from dalle2_pytorch.diffusion.noise import randn
from dalle2_pytorch.diffusion.samplers import (DEFAULT_SPACING, SAMPLERS, Callback, _report, _shifted, ancestral_step,
                                               default_sampler, resolve_sampler, sample_loop, sampling_sigmas)


def _check_resample_times(resample_times: int) -> None:
    if isinstance(resample_times, bool) or not isinstance(resample_times, int) or resample_times < 1:
        raise ValueError(f"resample_times must be a positive integer, got {resample_times!r}")


class KnownRegionDenoiser(ModelDenoiser):
    """``denoiser`` whose input holds, where ``mask`` is set, ``known + σ ε`` with fresh noise ε at each call.

    ``known`` and ``mask`` (bool) broadcast to the sampled shape; VE coordinates as everywhere in the core."""

    def __init__(self, denoiser: ModelDenoiser, known: Tensor, mask: Tensor,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__(denoiser.model_fn, denoiser.schedule, denoiser.objective,
                         x0_transform=denoiser.x0_transform, self_condition=denoiser.self_condition)
        self.known, self.mask, self.generator = known, mask.bool(), generator

    def denoise(self, x: Tensor, sigma: Tensor, *, self_cond: Optional[Tensor] = None) -> Denoised:
        sigma = sigma.to(x.device).float()
        level = sigma.reshape(-1, *((1,) * (x.ndim - 1))) if sigma.ndim else sigma
        noisy = self.known + level * randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return super().denoise(torch.where(self.mask, noisy, x), sigma, self_cond=self_cond)


@torch.no_grad()
def inpaint_loop(denoiser: ModelDenoiser, shape: tuple[int, ...] | torch.Size, known: Tensor, mask: Tensor, *,
                 sampler: str = "ddim", steps: Optional[int] = None, spacing: Optional[str] = None, eta: float = 0.0,
                 resample_times: int = 1, generator: Optional[torch.Generator] = None, callback: Callback = None,
                 device: torch.device | str | None = None, noise: Optional[Tensor] = None) -> Tensor:
    """Sample ``shape`` with any sampler, keeping ``known`` where ``mask`` (bool, True = keep) is set.

    The arguments are those of :func:`~dalle2_pytorch.diffusion.samplers.sample_loop`.  With
    ``resample_times = r > 1`` every step runs ``r`` times, re-noised back to its starting level in between
    (RePaint's resampling); a multistep sampler (``dpmpp_2m``) then restarts its history at every step,
    i.e. runs as its first-order form.  The output is ``known`` bit for bit where ``mask`` is set.
    """
    _check_resample_times(resample_times)
    schedule = denoiser.schedule
    device = device if device is not None else schedule.betas.device
    known = known.to(device).float()
    mask = mask.to(device).bool().expand(shape)
    wrapped = KnownRegionDenoiser(denoiser, known, mask, generator)
    if resample_times == 1:
        x = sample_loop(wrapped, shape, sampler=sampler, steps=steps, spacing=spacing, eta=eta, generator=generator,
                        callback=callback, device=device, noise=noise)
        return torch.where(mask, known, x)
    name = resolve_sampler(sampler)
    if eta != 0.0 and name != "ddim":
        raise ValueError(f"eta={eta} only applies to the 'ddim' sampler, not {name!r}")
    _, steps = default_sampler(name, steps, sample_timesteps=None, num_timesteps=schedule.num_timesteps)
    sigmas = sampling_sigmas(schedule, steps, spacing or DEFAULT_SPACING[name], include_infinite=False).to(device)
    x = randn(tuple(shape), generator=generator, device=device) if noise is None else noise.to(device).float()
    x = x * (1 + sigmas[0] ** 2).sqrt()
    total = len(sigmas) - 1
    extra = {"eta": eta} if name == "ddim" else {}
    for i in range(total):
        for r in range(resample_times):
            x = SAMPLERS[name](wrapped, x, sigmas[i:i + 2], generator=generator, **extra,
                               callback=_shifted(callback, i, total) if r == resample_times - 1 else None)
            if r < resample_times - 1 and sigmas[i + 1] > 0:
                x = x + (sigmas[i] ** 2 - sigmas[i + 1] ** 2).sqrt() * randn(x.shape, generator=generator,
                                                                               device=device)
    return torch.where(mask, known, x)


@torch.no_grad()
def repaint_sample_loop(denoiser: ModelDenoiser, shape: tuple[int, ...] | torch.Size, known: Tensor, mask: Tensor, *,
                        resample_times: int = 5, steps: Optional[int] = None,
                        generator: Optional[torch.Generator] = None, callback: Callback = None,
                        device: torch.device | str | None = None) -> Tensor:
    """Sample ``shape`` with the region where ``mask`` is 1 (broadcastable to ``shape``) fixed to ``known``."""
    _check_resample_times(resample_times)
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

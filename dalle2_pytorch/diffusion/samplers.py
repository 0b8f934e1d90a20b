"""Samplers: each a short function over a denoiser D(x, σ) -> x0 and a descending σ schedule.

Every sampler has the signature ``sampler(denoiser, x, sigmas, *, generator=None,
callback=None, ...) -> x0`` where ``x`` is the starting point at ``sigmas[0]`` in VE coordinates
(x = x0 + σ ε) and ``sigmas`` ends with 0.  They work on any tensor shape.  ``sample_loop`` is
what models call: it picks σ's from the training schedule, draws the starting noise and runs one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.denoiser import ModelDenoiser
from dalle2_pytorch.diffusion.noise import randn
from dalle2_pytorch.diffusion.schedules import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
Callback = Optional[Callable[[dict[str, Any]], None]]


def _report(callback: Callback, i: int, total: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "x": x, "sigma": sigma, "denoised": denoised})


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up) of a stochastic step; η = 1 is DDPM's posterior, η = 0 deterministic DDIM."""
    if eta == 0 or sigma_to == 0:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2).sqrt())
    return (sigma_to ** 2 - sigma_up ** 2).sqrt(), sigma_up


# ---------------------------------------------------------------------------------- samplers
@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, callback: Callback = None) -> Tensor:
    """DDIM (Song et al.): deterministic for η = 0 (= Euler on the probability-flow ODE), DDPM-like at η = 1."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + sigma_down * (x - denoised) / sigmas[i]
        if sigma_up > 0:
            x = x + sigma_up * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                generator: Optional[torch.Generator] = None, callback: Callback = None) -> Tensor:
    """Ancestral DDPM: the posterior q(x_s | x_t, x0_hat), with the network's variance if it learns one."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, 1.0)
        x_next = denoised + sigma_down * (x - denoised) / sigma
        if sigma_next > 0:
            log_var = denoiser.step_log_variance(sigma, sigma_next) if isinstance(denoiser, ModelDenoiser) else None
            std = sigma_up if log_var is None else (0.5 * log_var).exp()
            x_next = x_next + std * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x_next
        _report(callback, i, len(sigmas) - 1, x, sigma, denoised)
    return x


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                 generator: Optional[torch.Generator] = None, callback: Callback = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dσ = (x - D(x, σ)) / σ (first order)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                generator: Optional[torch.Generator] = None, callback: Callback = None) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1 without churn): second order, 2 evaluations a step."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt  # last step: Euler, the ODE ends at σ = 0
        else:
            x_euler = x + d * dt
            d_next = (x_euler - denoiser(x_euler, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_next) / 2 * dt
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                    generator: Optional[torch.Generator] = None, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): multistep, second order, one evaluation a step."""
    old_denoised: Optional[Tensor] = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            d = denoised
        else:
            h_last = t - (-sigmas[i - 1].log())
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old_denoised = denoised
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "heun": sample_heun,
}
SAMPLER_ALIASES = {"dpm++": "dpmpp_2m", "dpm_solver++": "dpmpp_2m", "dpmpp": "dpmpp_2m", "dpm-solver++": "dpmpp_2m"}
# Uniform ("trailing") spacing over the training steps is the default for the one-evaluation
# samplers: on a discrete schedule the Karras spacing is quantised to the few low-noise levels
# there are and measured worse at small step counts (see benchmarks/README.md).  Heun's
# trapezoid rule needs the Karras spacing's small first steps (from σ_max ~ 1e3 a uniform first
# step is too long for it).  ``spacing=`` overrides either choice.
DEFAULT_SPACING = {"ddpm": "trailing", "ddim": "trailing", "dpmpp_2m": "trailing", "euler": "trailing", "heun": "karras"}
SPACINGS = ("trailing", "karras")
KARRAS_SIGMA_MAX = 80.0


def resolve_sampler(name: str) -> str:
    name = SAMPLER_ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not known; choose one of {sorted(SAMPLERS)}")
    return name


# ---------------------------------------------------------------------------------- σ schedules
def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) noise levels, descending, without the final 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def check_steps(steps: Any, schedule: NoiseSchedule, sampler: str) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if steps > schedule.num_timesteps:
        raise ValueError(f"steps={steps} is more than the {schedule.num_timesteps} training timesteps; "
                         f"sampler {sampler!r} can take at most {schedule.num_timesteps}")
    return steps


def sampling_sigmas(schedule: NoiseSchedule, steps: int, spacing: str = "trailing", *,
                    include_infinite: bool = True) -> Tensor:
    """Descending σ's drawn from the training schedule's own levels, ending with 0.

    ``trailing``: steps evenly spaced over [T-1, 0] (all T steps when ``steps == T``).
    ``karras``: Karras ρ = 7 spacing between the smallest σ and min(largest, 80), each quantised to
    the nearest training level (duplicates dropped), so discrete-time networks see exact levels.
    ``include_infinite``: keep a leading σ = ∞ (zero-SNR last step) when the schedule has one.
    """
    T = schedule.num_timesteps
    sigmas_all = schedule.sigmas.detach().cpu().double()
    finite = torch.isfinite(sigmas_all)
    if spacing == "trailing":
        t = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long()
        chosen = sigmas_all[t]
        if not include_infinite and not torch.isfinite(chosen[0]):
            chosen = chosen[torch.isfinite(chosen)]
    elif spacing == "karras":
        # EDM caps σ_max at 80: beyond it the data is invisible in the noise, and the huge first
        # steps of a σ ~ 1e4 schedule (cosine) wreck a trapezoid/multistep update.
        levels = sigmas_all[finite]
        top = levels[levels <= KARRAS_SIGMA_MAX].max() if (levels <= KARRAS_SIGMA_MAX).any() else levels.min()
        chosen = karras_sigmas(float(levels.min()), float(top), steps)
        idx = (chosen.log().unsqueeze(-1) - levels.log()).abs().argmin(dim=-1)
        chosen = torch.unique_consecutive(levels[idx])
    else:
        raise ValueError(f"spacing={spacing!r} is not known; choose one of {list(SPACINGS)}")
    return torch.cat([chosen, chosen.new_zeros(1)]).float()


def sample_loop(denoiser: ModelDenoiser, shape: tuple[int, ...] | torch.Size, *, sampler: str = "ddim",
                steps: Optional[int] = None, spacing: Optional[str] = None, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                device: torch.device | str | None = None, noise: Optional[Tensor] = None,
                sigmas: Optional[Tensor] = None) -> Tensor:
    """Draw samples of ``shape`` from a network wrapped in a :class:`ModelDenoiser`.

    ``noise`` (standard normal, the x_T a DDPM starts from) may be given for reproducibility;
    otherwise it is drawn with ``generator``.  ``steps`` defaults to the training timesteps for
    ``ddpm`` and 50 for the others.  ``eta`` is used by ``ddim`` only.
    """
    name = resolve_sampler(sampler)
    schedule = denoiser.schedule
    device = device if device is not None else schedule.betas.device
    if eta != 0.0 and name != "ddim":
        raise ValueError(f"eta={eta} only applies to the 'ddim' sampler, not {name!r}")
    if sigmas is None:
        steps = check_steps(steps if steps is not None else (schedule.num_timesteps if name == "ddpm" else min(50, schedule.num_timesteps)),
                            schedule, name)
        sigmas = sampling_sigmas(schedule, steps, spacing or DEFAULT_SPACING[name],
                                 include_infinite=denoiser.supports_infinite_sigma())
    sigmas = sigmas.to(device)
    if noise is None:
        noise = randn(tuple(shape), generator=generator, device=device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    noise = noise.to(device).float()
    kwargs: dict[str, Any] = {"generator": generator, "callback": callback}
    if name == "ddim":
        kwargs["eta"] = eta

    if torch.isinf(sigmas[0]):
        # zero-SNR first step: x_T is pure noise; move deterministically to the next level
        t_last = torch.full((shape[0],), schedule.num_timesteps - 1, device=device, dtype=torch.long)
        denoised = denoiser.denoise_vp(noise, t_last)
        x = denoised + sigmas[1] * noise
        _report(callback, 0, len(sigmas) - 1, x, sigmas[0], denoised)
        sigmas = sigmas[1:]
        if len(sigmas) == 1:
            return denoised
    else:
        x = noise * (1 + sigmas[0] ** 2).sqrt()  # VP x_T ~ N(0, I) in VE coordinates
    return SAMPLERS[name](denoiser, x, sigmas, **kwargs)


def nfe_per_step(sampler: str) -> int:
    """Network evaluations per step (Heun evaluates twice except on its last step)."""
    return 2 if resolve_sampler(sampler) == "heun" else 1


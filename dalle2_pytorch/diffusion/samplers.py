"""Samplers: each a short function over a denoiser D(x, σ) -> x0 and a descending σ schedule.

Every sampler has the signature ``sampler(denoiser, x, sigmas, *, generator=None, callback=None,
self_cond=None, ...) -> x0`` where ``x`` is the starting point at ``sigmas[0]`` in VE coordinates
(x = x0 + σ ε) and ``sigmas`` ends with 0.  They work on any tensor shape.  ``denoiser`` is a
plain ``D(x, σ) -> x0`` callable or a :class:`ModelDenoiser`, whose richer :meth:`~ModelDenoiser.denoise`
also gives a learned variance; the loop threads the previous x0 estimate (``self_cond``, for
self-conditioning networks) from one evaluation to the next.  ``sample_loop`` is what models call:
it picks σ's from the training schedule, draws the starting noise and runs one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.denoiser import ModelDenoiser, denoise_step, learned_step_log_variance
from dalle2_pytorch.diffusion.noise import randn
from dalle2_pytorch.diffusion.schedules import NoiseSchedule

Denoiser = Callable[..., Tensor]
Callback = Optional[Callable[[dict[str, Any]], None]]


def _report(callback: Callback, i: int, total: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "x": x, "sigma": sigma, "denoised": denoised})


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up) of a stochastic step; η = 1 is DDPM's posterior, η = 0 deterministic DDIM."""
    if eta == 0 or sigma_to == 0:
        return sigma_to, torch.zeros_like(sigma_to)
    # in float64: from a large σ (cosine's ~2e4) σ_up is within 1e-6 of σ_to and σ_down² = σ_to² - σ_up² cancels
    s_from, s_to = sigma_from.double(), sigma_to.double()
    sigma_up = torch.minimum(s_to, eta * (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2).sqrt())
    return (s_to ** 2 - sigma_up ** 2).sqrt().to(sigma_to.dtype), sigma_up.to(sigma_to.dtype)


# ---------------------------------------------------------------------------------- samplers
@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                self_cond: Optional[Tensor] = None) -> Tensor:
    """DDIM (Song et al.): deterministic for η = 0 (= Euler on the probability-flow ODE), DDPM-like at η = 1."""
    for i in range(len(sigmas) - 1):
        denoised = self_cond = denoise_step(denoiser, x, sigmas[i], self_cond).x0
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + sigma_down * (x - denoised) / sigmas[i]
        if sigma_up > 0:
            x = x + sigma_up * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                self_cond: Optional[Tensor] = None) -> Tensor:
    """Ancestral DDPM: the posterior q(x_s | x_t, x0_hat), with the network's variance if it learns one."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        out = denoise_step(denoiser, x, sigma, self_cond)
        denoised = self_cond = out.x0
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, 1.0)
        x_next = denoised + sigma_down * (x - denoised) / sigma
        if sigma_next > 0:
            std = sigma_up if out.variance_frac is None else \
                (0.5 * learned_step_log_variance(out.variance_frac, sigma, sigma_next)).exp()
            x_next = x_next + std * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x_next
        _report(callback, i, len(sigmas) - 1, x, sigma, denoised)
    return x


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                 generator: Optional[torch.Generator] = None, callback: Callback = None,
                 self_cond: Optional[Tensor] = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dσ = (x - D(x, σ)) / σ (first order)."""
    for i in range(len(sigmas) - 1):
        denoised = self_cond = denoise_step(denoiser, x, sigmas[i], self_cond).x0
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                self_cond: Optional[Tensor] = None) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1 without churn): second order, 2 evaluations a step."""
    for i in range(len(sigmas) - 1):
        denoised = self_cond = denoise_step(denoiser, x, sigmas[i], self_cond).x0
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt  # last step: Euler, the ODE ends at σ = 0
        else:
            x_euler = x + d * dt
            self_cond = denoise_step(denoiser, x_euler, sigmas[i + 1], self_cond).x0
            d_next = (x_euler - self_cond) / sigmas[i + 1]
            x = x + (d + d_next) / 2 * dt
        _report(callback, i, len(sigmas) - 1, x, sigmas[i], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *,
                    generator: Optional[torch.Generator] = None, callback: Callback = None,
                    self_cond: Optional[Tensor] = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): multistep, second order, one evaluation a step."""
    old_denoised: Optional[Tensor] = None
    for i in range(len(sigmas) - 1):
        denoised = self_cond = denoise_step(denoiser, x, sigmas[i], self_cond).x0
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
# Uniform ("trailing") spacing over the training steps is the default for the one-evaluation
# samplers: on a discrete schedule the Karras spacing is quantised to the few low-noise levels
# there are and measured worse at small step counts (see benchmarks/README.md).  Heun's
# trapezoid rule needs the Karras spacing's small first steps (from σ_max ~ 1e3 a uniform first
# step is too long for it).  ``spacing=`` overrides either choice.
DEFAULT_SPACING = {"ddpm": "trailing", "ddim": "trailing", "dpmpp_2m": "trailing", "euler": "trailing", "heun": "karras"}
SPACINGS = ("trailing", "karras")
KARRAS_SIGMA_MAX = 80.0
DEFAULT_FEW_STEPS = 50  # steps of a non-DDPM sampler named without a step count


# other spellings of DPM-Solver++(2M), accepted wherever a sampler is named (CLI, pipeline files)
SAMPLER_ALIASES = {"dpm++": "dpmpp_2m", "dpm_solver++": "dpmpp_2m", "dpmpp": "dpmpp_2m", "dpm-solver++": "dpmpp_2m"}


def resolve_sampler(name: str) -> str:
    """The canonical name of sampler ``name`` (one of :data:`SAMPLERS` or an alias), else a ValueError."""
    name = SAMPLER_ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not known; choose one of {sorted(SAMPLERS)}")
    return name


def default_sampler(sampler: Optional[str], steps: Optional[int], *, sample_timesteps: Optional[int],
                    num_timesteps: int) -> tuple[str, int]:
    """The one rule by which the prior and the decoder pick a sampler and its step count.

    * steps: ``steps`` if given, else the model's ``sample_timesteps`` if set, else the sampler's
      own default (below);
    * sampler: ``sampler`` if given, else ``'ddpm'`` when the run covers the whole training schedule
      (no step count at all, or exactly ``num_timesteps``) and ``'ddim'`` for any shorter run;
    * a sampler named without any step count runs ``num_timesteps`` steps if it is ``'ddpm'``
      (ancestral sampling is made for the full schedule) and ``min(50, num_timesteps)`` otherwise.

    Returns ``(sampler name, steps)``; an unknown sampler or a bad step count is a ValueError.
    """
    if steps is None:
        steps = sample_timesteps
    name = resolve_sampler(sampler) if sampler is not None else \
        ("ddpm" if steps is None or steps == num_timesteps else "ddim")
    if steps is None:
        steps = num_timesteps if name == "ddpm" else min(DEFAULT_FEW_STEPS, num_timesteps)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if steps > num_timesteps:
        raise ValueError(f"steps={steps} is more than the {num_timesteps} training timesteps; "
                         f"sampler {name!r} can take at most {num_timesteps}")
    return name, steps


# ---------------------------------------------------------------------------------- σ schedules
def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) noise levels, descending, without the final 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


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


def _shifted(callback: Callback, offset: int, total: int) -> Callback:
    """``callback`` with step indices shifted by ``offset`` and ``total`` replaced (a loop run in parts)."""
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset, "total": total})


def sample_loop(denoiser: ModelDenoiser, shape: tuple[int, ...] | torch.Size, *, sampler: str = "ddim",
                steps: Optional[int] = None, spacing: Optional[str] = None, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                device: torch.device | str | None = None, noise: Optional[Tensor] = None,
                sigmas: Optional[Tensor] = None) -> Tensor:
    """Draw samples of ``shape`` from a network wrapped in a :class:`ModelDenoiser`.

    ``noise`` (standard normal, the x_T a DDPM starts from) may be given for reproducibility;
    otherwise it is drawn with ``generator``.  ``steps`` defaults as in :func:`default_sampler`
    (the training timesteps for ``ddpm``, 50 for the others).  ``eta`` is used by ``ddim`` only.
    ``callback`` is called once per step with ``i`` = 0 .. total - 1.
    """
    schedule = denoiser.schedule
    name = resolve_sampler(sampler)
    device = device if device is not None else schedule.betas.device
    if eta != 0.0 and name != "ddim":
        raise ValueError(f"eta={eta} only applies to the 'ddim' sampler, not {name!r}")
    if sigmas is None:
        _, steps = default_sampler(name, steps, sample_timesteps=None, num_timesteps=schedule.num_timesteps)
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
        # zero-SNR first step: x_T is pure noise; move deterministically to the next level.  It is
        # step 0 of the run: the sampler's own steps are reported as 1 .. total - 1.
        total = len(sigmas) - 1
        t_last = torch.full((shape[0],), schedule.num_timesteps - 1, device=device, dtype=torch.long)
        denoised = denoiser.denoise_vp(noise, t_last).x0
        x = denoised + sigmas[1] * noise
        _report(callback, 0, total, x, sigmas[0], denoised)
        sigmas = sigmas[1:]
        if len(sigmas) == 1:
            return denoised
        kwargs.update(callback=_shifted(callback, 1, total), self_cond=denoised)
    else:
        x = noise * (1 + sigmas[0] ** 2).sqrt()  # VP x_T ~ N(0, I) in VE coordinates
    return SAMPLERS[name](denoiser, x, sigmas, **kwargs)

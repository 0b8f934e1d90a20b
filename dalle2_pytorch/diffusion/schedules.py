"""Noise schedules as data.

A :class:`NoiseSchedule` holds the tensors of a discrete Gaussian diffusion of ``T`` steps
(β_t, ᾱ_t and everything derived from them) as float32 buffers, computed in float64.  It also
gives each step its *VE noise level* σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), the coordinate in which the
samplers of :mod:`dalle2_pytorch.diffusion.samplers` work (x_ve = x_vp / sqrt(ᾱ_t)).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import Tensor, nn


def _linear_betas(timesteps: int) -> Tensor:
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def _quadratic_betas(timesteps: int) -> Tensor:
    scale = 1000 / timesteps
    return torch.linspace(math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02), timesteps, dtype=torch.float64) ** 2


def _sigmoid_betas(timesteps: int) -> Tensor:
    scale = 1000 / timesteps
    start, end = scale * 1e-4, scale * 0.02
    return torch.sigmoid(torch.linspace(-6, 6, timesteps, dtype=torch.float64)) * (end - start) + start


def _cosine_betas(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine schedule, β clipped to 0.999."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


def _jsd_betas(timesteps: int) -> Tensor:
    """β_t = 1 / (T - t): the schedule of Sohl-Dickstein et al.; its last step has zero SNR."""
    return 1.0 / torch.linspace(timesteps, 1, timesteps, dtype=torch.float64)


BETA_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "cosine": _cosine_betas,
    "linear": _linear_betas,
    "quadratic": _quadratic_betas,
    "sigmoid": _sigmoid_betas,
    "jsd": _jsd_betas,
}


def make_betas(beta_schedule: str, timesteps: int) -> Tensor:
    """β_1..β_T (float64) of a named schedule."""
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule={beta_schedule!r} is not known; choose one of {sorted(BETA_SCHEDULES)}")
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps <= 0:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    betas = BETA_SCHEDULES[beta_schedule](timesteps)
    if beta_schedule != "jsd" and not bool((betas <= 1).all()):
        # linear/quadratic/sigmoid scale their end point by 1000 / T: β_T = 20 / T reaches 1 at T = 20
        raise ValueError(f"beta_schedule={beta_schedule!r} with timesteps={timesteps} gives β > 1 (a negative "
                         f"ᾱ); use at least 20 timesteps or beta_schedule='cosine'")
    return betas


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2023: shift and scale sqrt(ᾱ) so that ᾱ_T = 0 while ᾱ_1 is unchanged."""
    alphas_bar_sqrt = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def extract(values: Tensor, t: Tensor, x_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Gather ``values[t]`` per batch element and shape it to broadcast against ``x_shape``."""
    out = values.gather(-1, t.to(values.device).long())
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


class NoiseSchedule(nn.Module):
    """The tensors of a ``timesteps``-step Gaussian diffusion (buffers follow ``.to()``; not saved)."""

    def __init__(self, beta_schedule: str = "cosine", timesteps: int = 1000, *,
                 zero_terminal_snr: bool = False, betas: Tensor | None = None):
        super().__init__()
        # a model built on the meta device (to check its config) still gets real schedules: they are small, and
        # the constructors read values from them
        on_meta = torch.empty(0).device.type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self._build(beta_schedule, timesteps, zero_terminal_snr, betas)

    def _build(self, beta_schedule: str, timesteps: int, zero_terminal_snr: bool, betas: Tensor | None) -> None:
        if betas is None:
            betas = make_betas(beta_schedule, timesteps)
            if zero_terminal_snr:
                betas = rescale_zero_terminal_snr(betas)
        else:
            betas = betas.to(torch.float64)
            if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
                raise ValueError("betas must be a 1-d tensor with values in (0, 1]")
        self.beta_schedule = beta_schedule
        self.zero_terminal_snr = zero_terminal_snr
        self.num_timesteps = int(betas.shape[0])
        self.betas64 = betas.detach().cpu().clone()  # exact values, for respacing

        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # inf where ᾱ = 0

        def register(name: str, value: Tensor) -> None:
            self.register_buffer(name, value.to(torch.float32), persistent=False)

        register("betas", betas)
        register("alphas_cumprod", alphas_cumprod)
        register("alphas_cumprod_prev", alphas_cumprod_prev)
        register("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
        register("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())
        register("sigmas", sigmas)
        register("posterior_variance", posterior_variance)
        # the first posterior variance is 0: clip the log with the next value, as in Improved DDPM
        register("posterior_log_variance_clipped",
                 torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]).clamp(min=1e-20)))
        register("posterior_mean_coef1", betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod))
        register("posterior_mean_coef2", (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod))

    def extra_repr(self) -> str:
        return f"beta_schedule={self.beta_schedule!r}, timesteps={self.num_timesteps}, zero_terminal_snr={self.zero_terminal_snr}"

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t ~ q(x_t | x0) = N(sqrt(ᾱ_t) x0, (1 - ᾱ_t) I) with the given noise."""
        return extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0 + \
            extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = extract(self.posterior_mean_coef1, t, x_t.shape) * x0 + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        return (mean, extract(self.posterior_variance, t, x_t.shape),
                extract(self.posterior_log_variance_clipped, t, x_t.shape))

    def sample_random_times(self, batch: int, device: torch.device | str | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch,), device=gen_device, generator=generator)
        return t.to(device) if device is not None else t

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) per batch element."""
        ac = self.alphas_cumprod.gather(-1, t.to(self.alphas_cumprod.device).long())
        return ac / (1 - ac)

    # ------------------------------------------------------------------ respacing
    def respace(self, steps: int) -> tuple["NoiseSchedule", Tensor]:
        """A schedule over ``steps`` evenly spaced kept steps, with β recomputed from the kept ᾱ.

        Returns the new schedule and the original timestep index of each of its steps, so that a
        network trained on this schedule can be evaluated on the respaced one (guided-diffusion).
        """
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 < steps <= self.num_timesteps:
            raise ValueError(f"steps must be an integer in [1, {self.num_timesteps}], got {steps!r}")
        kept = torch.linspace(0, self.num_timesteps - 1, steps, dtype=torch.float64).round().long()
        alphas_cumprod = torch.cumprod(1.0 - self.betas64, dim=0)[kept]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        betas = 1 - alphas_cumprod / previous
        return NoiseSchedule(self.beta_schedule, steps, betas=betas).to(self.betas.device), kept


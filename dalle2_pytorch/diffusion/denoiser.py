"""Turn a network trained on a discrete schedule into a denoiser D(x, σ) -> x0.

The samplers work in variance-exploding (VE) coordinates, x = x0 + σ ε, as in k-diffusion and
EDM: one sampler implementation then serves every schedule and objective.  A network trained
with a DDPM schedule sees x_vp = x / sqrt(1 + σ²) and the integer step t whose σ_t is nearest to
σ (exact when σ comes from the schedule, which :func:`sampling_sigmas` ensures).

The denoiser is stateless: :meth:`ModelDenoiser.denoise` returns everything a sampler needs (the
x0 estimate and, for a learned-variance network, its variance fraction) and takes the previous x0
estimate for self-conditioning as an argument, so the sampler loop owns that state and one
denoiser can serve several loops at once.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.objectives import check_objective, model_output_to_x0
from dalle2_pytorch.diffusion.schedules import NoiseSchedule

ModelOutput = Union[Tensor, tuple[Tensor, Tensor]]
ModelFn = Callable[..., ModelOutput]


class Denoised(NamedTuple):
    """One denoiser evaluation: the x0 estimate and, for a learned-variance network, ``variance_frac``
    in [0, 1] (the interpolation weight between the posterior variance β̃ (0) and β (1)), else None."""

    x0: Tensor
    variance_frac: Optional[Tensor] = None


class ModelDenoiser:
    """``D(x_ve, sigma) -> x0`` around ``model_fn(x_vp, t, **extra) -> raw output``.

    Args:
        model_fn: the (guided) network.  Returns its raw output under ``objective``, or for a
            learned-variance network a pair ``(output, frac)`` with ``frac`` in [0, 1] the
            interpolation weight between the posterior variance β̃ (0) and β (1).
        schedule: the training schedule of the network.
        objective: ``'eps'``, ``'x0'`` or ``'v'``.
        x0_transform: applied to every x0 prediction (static clamp, dynamic threshold, l2-norm ...).
        self_condition: pass the previous x0 prediction, given by the sampler loop, as ``self_cond=``.
    """

    def __init__(self, model_fn: ModelFn, schedule: NoiseSchedule, objective: str = "eps", *,
                 x0_transform: Optional[Callable[[Tensor], Tensor]] = None, self_condition: bool = False):
        self.model_fn = model_fn
        self.schedule = schedule
        self.objective = check_objective(objective)
        self.x0_transform = x0_transform
        self.self_condition = self_condition

    # ------------------------------------------------------------------ σ <-> t
    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Index of the training step whose σ_t is nearest to ``sigma`` (in log space)."""
        sigmas = self.schedule.sigmas.to(sigma.device)
        finite = torch.isfinite(sigmas)
        log_sigmas = torch.where(finite, sigmas.log(), torch.full_like(sigmas, float("inf")))
        log_sigma = sigma.float().clamp(min=1e-20).log()
        dists = (log_sigma.unsqueeze(-1) - log_sigmas).abs()
        dists = torch.where(torch.isinf(sigma).unsqueeze(-1) & ~finite, torch.zeros_like(dists), dists)
        dists = torch.nan_to_num(dists, nan=float("inf"))
        return dists.argmin(dim=-1)

    def supports_infinite_sigma(self) -> bool:
        """A zero-SNR step can only be denoised by x0 or v networks (ε carries no x0 there)."""
        return self.objective != "eps"

    # ------------------------------------------------------------------ evaluation
    def denoise_vp(self, x_vp: Tensor, t: Tensor, *, self_cond: Optional[Tensor] = None) -> Denoised:
        """x0 estimate from x_t in VP scaling at integer steps ``t`` (shape (b,)).

        ``self_cond`` is the previous x0 estimate (None at the first step); it reaches the network
        only when the denoiser was built with ``self_condition=True``.
        """
        extra = {"self_cond": self_cond} if self.self_condition else {}
        out = self.model_fn(x_vp, t, **extra)
        frac = None
        if isinstance(out, tuple):
            out, frac = out
        x0 = model_output_to_x0(self.schedule, self.objective, out.float(), x_vp.float(), t)
        if self.x0_transform is not None:
            x0 = self.x0_transform(x0)
        return Denoised(x0, frac)

    def denoise(self, x: Tensor, sigma: Tensor, *, self_cond: Optional[Tensor] = None) -> Denoised:
        """x0 estimate (and variance fraction) from x = x0 + σ ε (``sigma`` a scalar tensor or shape (b,))."""
        sigma = sigma.to(x.device).float()
        if sigma.ndim == 0:  # the usual case: one level for the whole batch, looked up once
            t = self.sigma_to_t(sigma.reshape(1)).expand(x.shape[0])
            sigma = sigma.expand(x.shape[0])
        else:
            t = self.sigma_to_t(sigma)
        scale = (1 + sigma ** 2).rsqrt().reshape(-1, *((1,) * (x.ndim - 1)))
        return self.denoise_vp(x * scale, t, self_cond=self_cond)

    def __call__(self, x: Tensor, sigma: Tensor, *, self_cond: Optional[Tensor] = None) -> Tensor:
        """k-diffusion style ``D(x, σ) -> x0`` (the variance fraction, if any, is dropped)."""
        return self.denoise(x, sigma, self_cond=self_cond).x0


def denoise_step(denoiser: Callable[..., Tensor], x: Tensor, sigma: Tensor,
                 self_cond: Optional[Tensor] = None) -> Denoised:
    """Evaluate any denoiser the samplers accept: a :class:`ModelDenoiser` (x0, variance fraction and
    self-conditioning) or a plain ``D(x, σ) -> x0`` callable (no variance, no self-conditioning)."""
    if isinstance(denoiser, ModelDenoiser):
        return denoiser.denoise(x, sigma, self_cond=self_cond)
    return Denoised(denoiser(x, sigma))


def learned_step_log_variance(frac: Tensor, sigma_from: Tensor, sigma_to: Tensor) -> Tensor:
    """Log-variance (VE units) of a DDPM step σ_from -> σ_to from a learned variance fraction ``frac``.

    ``frac`` interpolates, in log space, between the step's posterior variance β̃ (0) and β (1),
    both computed for the (possibly respaced) step σ_from -> σ_to.
    """
    ac_from = 1 / (1 + sigma_from.double() ** 2)
    ac_to = 1 / (1 + sigma_to.double() ** 2)
    beta = (1 - ac_from / ac_to).clamp(min=1e-20)
    beta_tilde = (beta * (1 - ac_to) / (1 - ac_from)).clamp(min=1e-20)
    log_var_vp = frac.double() * beta.log() + (1 - frac.double()) * beta_tilde.log()
    return (log_var_vp - ac_to.log()).to(frac.dtype)

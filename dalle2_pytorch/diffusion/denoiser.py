"""Turn a network trained on a discrete schedule into a denoiser D(x, σ) -> x0.

The samplers work in variance-exploding (VE) coordinates, x = x0 + σ ε, as in k-diffusion and
EDM: one sampler implementation then serves every schedule and objective.  A network trained
with a DDPM schedule sees x_vp = x / sqrt(1 + σ²) and the integer step t whose σ_t is nearest to
σ (exact when σ comes from the schedule, which :func:`sampling_sigmas` ensures).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.objectives import check_objective, model_output_to_x0
from dalle2_pytorch.diffusion.schedules import NoiseSchedule

ModelOutput = Union[Tensor, tuple[Tensor, Tensor]]
ModelFn = Callable[..., ModelOutput]


class ModelDenoiser:
    """``D(x_ve, sigma) -> x0`` around ``model_fn(x_vp, t, **extra) -> raw output``.

    Args:
        model_fn: the (guided) network.  Returns its raw output under ``objective``, or for a
            learned-variance network a pair ``(output, frac)`` with ``frac`` in [0, 1] the
            interpolation weight between the posterior variance β̃ (0) and β (1).
        schedule: the training schedule of the network.
        objective: ``'eps'``, ``'x0'`` or ``'v'``.
        x0_transform: applied to every x0 prediction (static clamp, dynamic threshold, l2-norm ...).
        self_condition: pass the previous x0 prediction as ``self_cond=`` (None at the first step).
    """

    def __init__(self, model_fn: ModelFn, schedule: NoiseSchedule, objective: str = "eps", *,
                 x0_transform: Optional[Callable[[Tensor], Tensor]] = None, self_condition: bool = False):
        self.model_fn = model_fn
        self.schedule = schedule
        self.objective = check_objective(objective)
        self.x0_transform = x0_transform
        self.self_condition = self_condition
        self.last_x0: Optional[Tensor] = None
        self.last_variance_frac: Optional[Tensor] = None
        self.num_calls = 0

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
    def denoise_vp(self, x_vp: Tensor, t: Tensor) -> Tensor:
        """x0 prediction from x_t in VP scaling at integer steps ``t`` (shape (b,))."""
        extra = {"self_cond": self.last_x0} if self.self_condition else {}
        out = self.model_fn(x_vp, t, **extra)
        self.num_calls += 1
        if isinstance(out, tuple):
            out, frac = out
            self.last_variance_frac = frac
        x0 = model_output_to_x0(self.schedule, self.objective, out.float(), x_vp.float(), t)
        if self.x0_transform is not None:
            x0 = self.x0_transform(x0)
        if self.self_condition:
            self.last_x0 = x0.detach()
        return x0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x0 prediction from x = x0 + σ ε (``sigma`` a scalar tensor or shape (b,))."""
        sigma = sigma.to(x.device).float()
        if sigma.ndim == 0:  # the usual case: one level for the whole batch, looked up once
            t = self.sigma_to_t(sigma.reshape(1)).expand(x.shape[0])
            sigma = sigma.expand(x.shape[0])
        else:
            t = self.sigma_to_t(sigma)
        scale = (1 + sigma ** 2).rsqrt().reshape(-1, *((1,) * (x.ndim - 1)))
        return self.denoise_vp(x * scale, t)

    def step_log_variance(self, sigma_from: Tensor, sigma_to: Tensor) -> Optional[Tensor]:
        """Log-variance (VE units) of a DDPM step σ_from -> σ_to from the learned interpolation.

        Returns None when the network does not learn its variance.
        """
        frac = self.last_variance_frac
        if frac is None:
            return None
        ac_from = 1 / (1 + sigma_from.double() ** 2)
        ac_to = 1 / (1 + sigma_to.double() ** 2)
        beta = (1 - ac_from / ac_to).clamp(min=1e-20)
        beta_tilde = (beta * (1 - ac_to) / (1 - ac_from)).clamp(min=1e-20)
        log_var_vp = frac.double() * beta.log() + (1 - frac.double()) * beta_tilde.log()
        return (log_var_vp - ac_to.log()).to(frac.dtype)

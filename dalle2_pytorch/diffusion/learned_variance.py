"""Improved-DDPM learned variance: interpolated log-variance and the variational bound term.

The network's extra output channels give ``frac`` in [0, 1]; the reverse-step log-variance is
``frac * log β_t + (1 - frac) * log β̃_t``.  The VLB term trains only that variance: the mean
is built from a detached x0 prediction (the "hybrid" objective of Nichol & Dhariwal).
Everything is computed in float32 with clamped logs, so that the term stays finite even when a
small network outputs extreme values (a NaN source in the reference).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.schedules import NoiseSchedule, extract


def variance_frac(raw: Tensor, constrain: bool = False) -> Tensor:
    """Map the network's raw variance channels to [0, 1]: (v + 1) / 2, or a sigmoid if ``constrain``."""
    return torch.sigmoid(raw) if constrain else ((raw + 1) / 2).clamp(0, 1)


def learned_variance_log_var(schedule: NoiseSchedule, frac: Tensor, t: Tensor) -> Tensor:
    """Log-variance of p(x_{t-1} | x_t) interpolated between β̃_t (frac 0) and β_t (frac 1)."""
    min_log = extract(schedule.posterior_log_variance_clipped, t, frac.shape)
    max_log = extract(torch.log(schedule.betas.clamp(min=1e-20)), t, frac.shape)
    return frac.float() * max_log + (1 - frac.float()) * min_log


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor, thres: float = 0.999) -> Tensor:
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under N(means, e^{2 log_scales})."""
    eps = 1e-12
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=eps))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=eps))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -thres, log_cdf_plus,
                       torch.where(x > thres, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=eps))))


def vlb_loss(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor, pred_x0: Tensor, model_log_variance: Tensor) -> Tensor:
    """Per-sample variational-bound term in bits: KL to the true posterior for t > 0, decoder NLL at t = 0.

    ``pred_x0`` should be detached by the caller for the hybrid objective (only the variance learns).
    """
    x0, x_t, pred_x0, model_log_variance = x0.float(), x_t.float(), pred_x0.float(), model_log_variance.float()
    true_mean, _, true_log_var = schedule.q_posterior(x0, x_t, t)
    model_mean, _, _ = schedule.q_posterior(pred_x0, x_t, t)
    kl = normal_kl(true_mean, true_log_var, model_mean, model_log_variance)
    kl = kl.reshape(kl.shape[0], -1).mean(dim=1) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, means=model_mean, log_scales=0.5 * model_log_variance)
    nll = nll.reshape(nll.shape[0], -1).mean(dim=1) / math.log(2.0)
    return torch.where(t == 0, nll, kl)

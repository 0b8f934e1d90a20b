"""Closed-form denoisers for data whose optimal denoiser is known exactly."""


import torch


def gaussian_denoiser(mu: float, s: float):
    """Optimal D(x, σ) for data ~ N(mu, s²): the posterior mean (x s² + mu σ²) / (s² + σ²)."""
    def denoise(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return (x * s ** 2 + mu * sigma ** 2) / (s ** 2 + sigma ** 2)
    return denoise


def mixture_denoiser(means, std: float, weights=None):
    """Optimal D(x, σ) for 1-d data from an equal-variance Gaussian mixture (elementwise)."""
    means = torch.tensor(means, dtype=torch.float64)
    weights = torch.full_like(means, 1 / len(means)) if weights is None else torch.tensor(weights, dtype=torch.float64)

    def denoise(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        var = (std ** 2 + sigma ** 2).unsqueeze(-1)  # broadcast against the mixture axis
        xd = x.double().unsqueeze(-1)
        logits = weights.log() - (xd - means) ** 2 / (2 * var)
        post = torch.softmax(logits, dim=-1)
        comp_means = (xd * std ** 2 + means * (var - std ** 2)) / var
        return (post * comp_means).sum(-1).to(x.dtype)
    return denoise


def vp_model_from_ve(denoise, schedule):
    """A VP 'network' (x0 objective) computed from a VE denoiser, for ModelDenoiser tests."""
    def model_fn(x_vp, t):
        sigma = schedule.sigmas[t].reshape(-1, *((1,) * (x_vp.ndim - 1)))
        finite = torch.isfinite(sigma)
        x_ve = torch.where(finite, x_vp * (1 + sigma.clamp(max=1e6) ** 2).sqrt(), x_vp)
        out = denoise(x_ve, sigma.clamp(max=1e6))
        return out
    return model_fn



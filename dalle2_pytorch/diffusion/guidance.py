"""Classifier-free guidance and the x0 post-processing applied while sampling."""

from __future__ import annotations

import torch
from torch import Tensor


def classifier_free_guidance(cond: Tensor, null: Tensor, scale: float) -> Tensor:
    """``null + (cond - null) * scale``.

    This is the paper's ``(1 + w) * cond - w * null`` with ``scale = 1 + w``: scale 1 is the plain
    conditional output, scale 0 the unconditional one, larger values push further from it.
    """
    if scale == 1:
        return cond
    return null + (cond - null) * scale


def condition_keep_mask(batch: int, drop_prob: float, device: torch.device | str | None = None) -> Tensor:
    """Condition dropout for classifier-free guidance training: a (batch,) bool mask, True where the
    condition is kept, each row dropped with probability ``drop_prob`` (exact for 0 and 1)."""
    if drop_prob <= 0:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if drop_prob >= 1:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, device=device) >= drop_prob


def static_clamp(x0: Tensor, limit: float = 1.0) -> Tensor:
    """Clip the x0 prediction to [-limit, limit] (pixel range of normalised images)."""
    return x0.clamp(-limit, limit)


def dynamic_threshold(x0: Tensor, percentile: float = 0.95) -> Tensor:
    """Imagen's dynamic thresholding: per sample, s = max(1, quantile(|x0|, p)); x0 <- clip(x0, -s, s) / s."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"dynamic threshold percentile must be in (0, 1], got {percentile!r}")
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, percentile, dim=-1).clamp(min=1.0).to(x0.dtype)
    s = s.reshape(-1, *((1,) * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def l2norm_clamp(x0: Tensor, scale: float) -> Tensor:
    """Project each vector onto the sphere of radius ``scale`` (the prior's l2-norm clamp)."""
    return torch.nn.functional.normalize(x0, dim=-1) * scale

"""Regression losses and per-timestep loss weights shared by the prior and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dalle2_pytorch.diffusion.schedules import NoiseSchedule

LOSS_TYPES = ("l1", "l2", "huber")


def check_loss_type(loss_type: str) -> str:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not known; choose one of {list(LOSS_TYPES)}")
    return loss_type


def elementwise_loss(pred: Tensor, target: Tensor, loss_type: str = "l2") -> Tensor:
    check_loss_type(loss_type)
    if loss_type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if loss_type == "l2":
        return F.mse_loss(pred, target, reduction="none")
    return F.smooth_l1_loss(pred, target, reduction="none")


def diffusion_loss(pred: Tensor, target: Tensor, loss_type: str = "l2", weights: Tensor | None = None) -> Tensor:
    """Mean loss; ``weights`` (shape (b,)) reweigh each sample's mean loss before averaging."""
    loss = elementwise_loss(pred.float(), target.float(), loss_type)
    per_sample = loss.reshape(loss.shape[0], -1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()


def p2_loss_weights(schedule: NoiseSchedule, t: Tensor, gamma: float, k: float = 1.0) -> Tensor:
    """P2 weighting (Choi et al. 2022): (k + SNR_t)^-γ; γ = 0 gives ones."""
    return (k + schedule.snr(t)) ** -gamma


"""The training loss of one unet of the cascade (all diffusion maths comes from ``dalle2_pytorch.diffusion``).

``x0`` is the target in the unet's own space: normalised pixels (``[-1, 1]``) or VAE latents.
The loss is the simple regression loss on the network's objective (ε, x0 or v), optionally P2
weighted, plus for a learned-variance unet the hybrid variational-bound term of Improved DDPM
(Nichol & Dhariwal 2021), whose mean comes from the detached x0 prediction so that it only trains
the variance.  Unlike the reference, the VLB term uses the unet's real objective (the reference
assumed ε) and finite-safe maths from the core, so it does not produce NaNs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dalle2_pytorch.diffusion import (NoiseSchedule, diffusion_loss, learned_variance_log_var, model_output_to_x0,
                                      p2_loss_weights, training_target, variance_frac, vlb_loss)


def split_unet_output(output: Tensor, learned_variance: bool) -> tuple[Tensor, Optional[Tensor]]:
    """``(prediction, raw variance channels or None)`` from a unet output."""
    if not learned_variance:
        return output, None
    prediction, raw_variance = output.chunk(2, dim=1)
    return prediction, raw_variance


@dataclass(frozen=True)
class LossSettings:
    """Decoder-wide loss options (the per-unet ones live in ``StageSettings``)."""

    loss_type: str
    p2_loss_weight_k: float
    vb_loss_weight: float
    learned_variance_constrain_frac: bool
    image_cond_drop_prob: float
    text_cond_drop_prob: float


def unet_diffusion_loss(*, unet: nn.Module, schedule: NoiseSchedule, x0: Tensor, objective: str,
                        learned_variance: bool, p2_loss_weight_gamma: float, settings: LossSettings,
                        unet_kwargs: dict[str, Any], clamp_x0: bool) -> Tensor:
    """Scalar loss of ``unet`` on a batch of clean targets ``x0``.

    ``unet_kwargs`` holds the conditioning (image_embed, text_encodings, lowres_cond_img,
    lowres_noise_level) that this unet takes.  ``clamp_x0``: pixel-space unets clip their x0
    estimate to [-1, 1] where it feeds back (self-conditioning); latent unets do not.
    """
    batch = x0.shape[0]
    times = schedule.sample_random_times(batch, x0.device)
    noise = torch.randn_like(x0)
    x_t = schedule.q_sample(x0, times, noise)

    # self-conditioning (Chen et al., Analog Bits): half of the time, condition on a detached first x0 estimate
    self_cond = None
    if getattr(unet, "self_cond", False) and torch.rand(()) < 0.5:
        with torch.no_grad():
            first, _ = split_unet_output(unet(x_t, times, **unet_kwargs), learned_variance)
            self_cond = model_output_to_x0(schedule, objective, first, x_t, times)
            self_cond = (self_cond.clamp(-1.0, 1.0) if clamp_x0 else self_cond).detach()

    output = unet(x_t, times, **unet_kwargs, self_cond=self_cond,
                  image_cond_drop_prob=settings.image_cond_drop_prob,
                  text_cond_drop_prob=settings.text_cond_drop_prob)
    prediction, raw_variance = split_unet_output(output, learned_variance)

    target = training_target(schedule, objective, x0, noise, times)
    weights = p2_loss_weights(schedule, times, p2_loss_weight_gamma, settings.p2_loss_weight_k) \
        if p2_loss_weight_gamma > 0 else None
    loss = diffusion_loss(prediction, target, settings.loss_type, weights)
    if not learned_variance:
        return loss

    frac = variance_frac(raw_variance, constrain=settings.learned_variance_constrain_frac)
    log_variance = learned_variance_log_var(schedule, frac, times)
    pred_x0 = model_output_to_x0(schedule, objective, prediction.detach().float(), x_t.float(), times)
    vb = vlb_loss(schedule, x0, x_t, times, pred_x0, log_variance)
    return loss + settings.vb_loss_weight * vb.mean()

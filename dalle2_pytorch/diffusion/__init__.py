"""The diffusion core shared by the prior (vectors) and the decoder (images).

Schedules are data, objectives convert between ε/x0/v, a denoiser wraps any network, and the
samplers are small functions over (denoiser, x, σ's).  The maths and the samplers' rules are in docs/diffusion.md.
"""

from dalle2_pytorch.diffusion.denoiser import Denoised, ModelDenoiser, denoise_step, learned_step_log_variance
from dalle2_pytorch.diffusion.guidance import (classifier_free_guidance, condition_keep_mask, dynamic_threshold,
                                              l2norm_clamp, static_clamp)
from dalle2_pytorch.diffusion.inpaint import repaint_sample_loop
from dalle2_pytorch.diffusion.learned_variance import (discretized_gaussian_log_likelihood, learned_variance_log_var,
                                                       normal_kl, variance_frac, vlb_loss)
from dalle2_pytorch.diffusion.noise import RowGenerators, randn
from dalle2_pytorch.diffusion.losses import LOSS_TYPES, diffusion_loss, elementwise_loss, p2_loss_weights
from dalle2_pytorch.diffusion.objectives import (OBJECTIVES, eps_from_x0, model_output_to_x0, objective_from_flags,
                                                 training_target, v_target, x0_from_eps, x0_from_v)
from dalle2_pytorch.diffusion.samplers import (SAMPLERS, default_sampler, karras_sigmas, resolve_sampler, sample_ddim,
                                               sample_ddpm, sample_dpmpp_2m, sample_euler, sample_heun, sample_loop,
                                               sampling_sigmas)
from dalle2_pytorch.diffusion.schedules import BETA_SCHEDULES, NoiseSchedule, extract, make_betas
from dalle2_pytorch.diffusion.training import self_conditioning_estimate

__all__ = [
    "BETA_SCHEDULES", "Denoised", "LOSS_TYPES", "ModelDenoiser", "NoiseSchedule", "OBJECTIVES", "RowGenerators",
    "SAMPLERS", "classifier_free_guidance", "condition_keep_mask", "default_sampler", "denoise_step",
    "diffusion_loss", "discretized_gaussian_log_likelihood", "dynamic_threshold", "elementwise_loss", "eps_from_x0",
    "extract", "karras_sigmas", "l2norm_clamp", "learned_step_log_variance", "learned_variance_log_var",
    "make_betas", "model_output_to_x0", "normal_kl", "objective_from_flags", "p2_loss_weights", "randn",
    "repaint_sample_loop", "resolve_sampler", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_euler",
    "sample_heun", "sample_loop", "sampling_sigmas", "self_conditioning_estimate", "static_clamp",
    "training_target", "v_target", "variance_frac", "vlb_loss", "x0_from_eps", "x0_from_v",
]

"""Sampling one unet of a :class:`~dalle2_pytorch.decoder.decoder.Decoder`: its low-resolution input,
conditioning, guidance, sampler choice, inpainting and (for latent unets) the VAE round trip."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import Tensor

from dalle2_pytorch.decoder.inpainting import resize_mask
from dalle2_pytorch.decoder.lowres import resize_image_to
from dalle2_pytorch.decoder.stage_sampling import choose_sampler, make_denoiser, sample_stage, x0_transform_for
from dalle2_pytorch.decoder.unet_setup import frozen_encoder, is_latent_vae

if TYPE_CHECKING:  # pragma: no cover
    from dalle2_pytorch.decoder.decoder import Decoder


def sample_unet(decoder: "Decoder", index: int, previous: Optional[Tensor], embeds: dict, *, cond_scale: float,
                sampler: Optional[str], steps: Optional[int], generator: Optional[torch.Generator],
                callback: Optional[Callable[[dict], None]], inpaint: Optional[tuple[Tensor, Tensor]],
                inpaint_resample_times: int) -> Tensor:
    """Samples of unet ``index + 1`` as normalised pixels (decoded if the unet works on latents).

    ``previous`` is the previous unet's output (normalised pixels) for upsamplers; ``embeds`` the prepared
    conditioning of :class:`DecoderConditions`; ``inpaint`` the checked ``(image, mask)`` in input range."""
    stage, unet, vae = decoder.stages[index], decoder.unets[index], decoder.vaes[index]
    schedule = decoder.schedules[index]
    latent = is_latent_vae(vae)
    device = next(unet.parameters()).device
    batch = embeds["batch"]
    if latent and not getattr(vae, "has_been_trained", True):
        warnings.warn(f"unet {index + 1} diffuses in the latent space of a VAE that was never trained; "
                      "its samples will be meaningless", stacklevel=3)
    unet_kwargs = decoder.conditions.unet_kwargs(unet, embeds, device=device)
    if index > 0:
        lowres, levels = decoder.lowres_conditioners[index - 1].for_sampling(
            previous.to(device), target_image_size=stage.image_size, noise_level=decoder.lowres_noise_sample_level,
            generator=generator, encode=frozen_encoder(vae) if latent else None)
        unet_kwargs["lowres_cond_img"] = lowres
        if levels is not None:
            unet_kwargs["lowres_noise_level"] = levels
    size = vae.get_encoded_fmap_size(stage.image_size) if latent else stage.image_size
    shape = (batch, unet.channels, size, size)

    scale = cond_scale if decoder.conditions.can_guide(unet, decoder.loss_settings) else 1.0
    denoiser = make_denoiser(
        unet=unet, schedule=schedule, objective=stage.objective, learned_variance=stage.learned_variance,
        constrain_frac=decoder.loss_settings.learned_variance_constrain_frac, cond_scale=scale,
        unet_kwargs=unet_kwargs, x0_transform=x0_transform_for(
            latent=latent, use_dynamic_thres=decoder.use_dynamic_thres,
            dynamic_thres_percentile=decoder.dynamic_thres_percentile))
    if inpaint is not None and sampler is None:
        sampler = "ddpm"   # RePaint is ancestral
    choice = choose_sampler(sampler, steps, sample_timesteps=stage.sample_timesteps,
                            ddim_sampling_eta=decoder.ddim_sampling_eta)
    stage_inpaint = None
    if inpaint is not None:
        known = decoder.normalize_img(resize_image_to(inpaint[0], stage.image_size).to(device))
        mask = resize_mask(inpaint[1], stage.image_size).to(device)
        if latent:
            known, mask = frozen_encoder(vae)(known), resize_mask(mask, size)
        stage_inpaint = (known, mask)
    stage_callback = None if callback is None else (lambda info: callback({**info, "unet_number": index + 1}))
    x0 = sample_stage(denoiser, shape, choice, generator=generator, callback=stage_callback, device=device,
                      inpaint=stage_inpaint, inpaint_resample_times=inpaint_resample_times)
    return vae.decode(x0).clamp(-1.0, 1.0) if latent else x0

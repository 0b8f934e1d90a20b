"""One unet of the cascade as an object: :class:`CascadeStage`.

A stage owns everything one unet needs, in one place for training and sampling alike: its settings
(:class:`StageSettings`), its noise schedule, its VAE (latent diffusion; the identity for pixel unets)
and, for upsamplers, the :class:`LowresConditioner` that turns the previous resolution into its
low-resolution input.  ``condition`` builds that input, ``loss`` is the training loss on a batch of
images and ``sample`` draws images with any sampler of the diffusion core.

Stages are cheap views over the modules that the :class:`~dalle2_pytorch.decoder.decoder.Decoder`
registers in its module lists (``unets``, ``vaes``, ``schedules``, ``lowres_conditioners``), so the
state-dict keys stay those of the reference layout.  Everything here works in the unet's own space:
normalised pixels (``[-1, 1]``) or VAE latents.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalle2_pytorch.decoder.cascade_config import StageSettings, is_latent_vae
from dalle2_pytorch.decoder.lowres import LowresConditioner, random_crop_pair, resize_image_to
from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, default_sampler, diffusion_loss,
                                      dynamic_threshold, learned_variance_log_var, model_output_to_x0,
                                      p2_loss_weights, repaint_sample_loop, sample_loop, self_conditioning_estimate,
                                      static_clamp, training_target, variance_frac, vlb_loss)
from dalle2_pytorch.diffusion.inpaint import inpaint_loop
from dalle2_pytorch.diffusion.inversion import ddim_invert, inversion_sigmas

Callback = Optional[Callable[[dict[str, Any]], None]]
Size = Union[int, tuple[int, int]]


@dataclass(frozen=True)
class CascadeOptions:
    """Decoder-wide settings that every stage reads (the per-unet ones are in :class:`StageSettings`)."""

    loss_type: str
    p2_loss_weight_k: float
    vb_loss_weight: float
    learned_variance_constrain_frac: bool
    image_cond_drop_prob: float
    text_cond_drop_prob: float
    use_dynamic_thres: bool
    dynamic_thres_percentile: float
    lowres_noise_sample_level: float
    ddim_sampling_eta: float


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_mask(mask: Tensor, size: Size) -> Tensor:
    """Nearest resize of a (b, 1, h, w) bool mask to ``size`` (an int for square, or ``(h, w)``)."""
    size = _pair(size)
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask.float(), size=size, mode="nearest").bool()


def paste_known(output: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """``output`` with ``image``'s pixels wherever ``mask`` is set (image resized to match if needed)."""
    if image.shape[-2:] != output.shape[-2:]:
        image = F.interpolate(image.float(), size=output.shape[-2:], mode="nearest").to(output.dtype)
        mask = resize_mask(mask, tuple(output.shape[-2:]))
    return torch.where(mask.to(output.device), image.to(output), output)


def split_unet_output(output: Tensor, learned_variance: bool) -> tuple[Tensor, Optional[Tensor]]:
    """``(prediction, raw variance channels or None)`` from a unet output."""
    if not learned_variance:
        return output, None
    prediction, raw_variance = output.chunk(2, dim=1)
    return prediction, raw_variance


@dataclass(frozen=True, eq=False)
class CascadeStage(StageSettings):
    """Unet ``number`` of the cascade with its schedule, VAE, low-res conditioner and the decoder's options.

    ``previous_image_size`` is the image size of the unet before (None for unet 1); ``lowres`` is None for
    unet 1.  Build stages with :meth:`Decoder.stage`; a stage holds references, never copies.
    """

    unet: nn.Module
    schedule: NoiseSchedule
    vae: nn.Module
    lowres: Optional[LowresConditioner]
    previous_image_size: Optional[int]
    options: CascadeOptions

    @classmethod
    def of(cls, settings: StageSettings, **parts: Any) -> "CascadeStage":
        """A stage from its settings and its parts (``unet``, ``schedule``, ``vae``, ``lowres``, ...)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(StageSettings)}, **parts)

    # ------------------------------------------------------------------ space of the unet
    @property
    def is_latent(self) -> bool:
        return is_latent_vae(self.vae)

    @property
    def diffusion_size(self) -> int:
        """Side of what the unet diffuses: the image size, or the VAE's latent size."""
        return self.vae.get_encoded_fmap_size(self.image_size) if self.is_latent else self.image_size

    def encode(self, image: Tensor) -> Tensor:
        """Normalised pixels into the unet's space (the frozen VAE's encoder for a latent unet)."""
        if not self.is_latent:
            return image
        with torch.no_grad():
            return self.vae.encode(image.clamp(-1.0, 1.0))

    def decode(self, x: Tensor) -> Tensor:
        """The unet's space back to normalised pixels."""
        return self.vae.decode(x).clamp(-1.0, 1.0) if self.is_latent else x

    def can_guide(self) -> bool:
        """Whether classifier-free guidance changes anything for this unet (it saw dropped conditions)."""
        unet, options = self.unet, self.options
        return (bool(unet.cond_on_image_embeds) and options.image_cond_drop_prob > 0) or \
            (bool(unet.cond_on_text_encodings) and options.text_cond_drop_prob > 0)

    # ------------------------------------------------------------------ the low-resolution input
    def condition(self, previous: Tensor, *, training: bool, generator: Optional[torch.Generator] = None,
                  size: Optional[Size] = None) -> dict[str, Tensor]:
        """The unet's low-resolution keywords (``lowres_cond_img``, ``lowres_noise_level``); ``{}`` for unet 1.

        Training: ``previous`` is the ground-truth batch, shrunk to the previous unet's size and augmented
        (blur, noise at a random level).  Sampling: ``previous`` is the previous unet's output, grown to
        size and noised at the decoder's fixed ``lowres_noise_sample_level``.  A latent unet gets the
        condition encoded by its VAE before the noise, where the unet sees it.  ``size`` (sampling only) grows
        ``previous`` to a canvas other than the stage's square (outpainting)."""
        if self.lowres is None:
            return {}
        encode = self.encode if self.is_latent else None
        if training:
            image, levels = self.lowres(previous, target_image_size=self.image_size,
                                        downsample_image_size=self.previous_image_size, encode=encode)
        else:
            image, levels = self.lowres.for_sampling(previous, target_image_size=size or self.image_size,
                                                     noise_level=self.options.lowres_noise_sample_level,
                                                     generator=generator, encode=encode)
        return {"lowres_cond_img": image} if levels is None else \
            {"lowres_cond_img": image, "lowres_noise_level": levels}

    # ------------------------------------------------------------------ training
    def loss(self, image: Tensor, unet_kwargs: dict[str, Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """``(loss, low-res input or None)`` on a batch of normalised images of at least the stage's size.

        ``unet_kwargs`` holds the embeddings this unet takes (image_embed, text_encodings)."""
        kwargs = {**unet_kwargs, **self.condition(image, training=True)}
        target = resize_image_to(image, self.image_size)
        if self.random_crop_size is not None:
            target, lowres = random_crop_pair(target, kwargs.get("lowres_cond_img"), self.random_crop_size)
            if lowres is not None:
                kwargs["lowres_cond_img"] = lowres
        return self.diffusion_loss(self.encode(target), kwargs), kwargs.get("lowres_cond_img")

    def diffusion_loss(self, x0: Tensor, unet_kwargs: dict[str, Tensor]) -> Tensor:
        """The simple loss on the unet's objective (ε, x0 or v), P2-weighted when γ > 0, plus for a
        learned-variance unet the variational-bound term of Improved DDPM (Nichol & Dhariwal 2021).

        The VLB term's mean comes from the detached prediction, so it trains the variance only; unlike the
        reference it uses the unet's real objective and finite-safe maths from the core."""
        unet, schedule, options = self.unet, self.schedule, self.options
        times = schedule.sample_random_times(x0.shape[0], x0.device)
        noise = torch.randn_like(x0)
        x_t = schedule.q_sample(x0, times, noise)

        # self-conditioning (Chen et al., Analog Bits): half of the time, condition on a detached first x0 estimate
        self_cond = self_conditioning_estimate(
            lambda: split_unet_output(unet(x_t, times, **unet_kwargs), self.learned_variance)[0], schedule,
            self.objective, x_t, times, enabled=bool(unet.self_cond),
            x0_transform=lambda x0: self._transform_x0(x0, clamp_only=True))

        output = unet(x_t, times, **unet_kwargs, self_cond=self_cond,
                      image_cond_drop_prob=options.image_cond_drop_prob,
                      text_cond_drop_prob=options.text_cond_drop_prob)
        prediction, raw_variance = split_unet_output(output, self.learned_variance)
        target = training_target(schedule, self.objective, x0, noise, times)
        gamma = self.p2_loss_weight_gamma
        weights = p2_loss_weights(schedule, times, gamma, options.p2_loss_weight_k) if gamma > 0 else None
        loss = diffusion_loss(prediction, target, options.loss_type, weights)
        if raw_variance is None:
            return loss
        frac = variance_frac(raw_variance, constrain=options.learned_variance_constrain_frac)
        log_variance = learned_variance_log_var(schedule, frac, times)
        pred_x0 = model_output_to_x0(schedule, self.objective, prediction.detach().float(), x_t.float(), times)
        vb = vlb_loss(schedule, x0, x_t, times, pred_x0, log_variance)
        return loss + options.vb_loss_weight * vb.mean()

    # ------------------------------------------------------------------ sampling
    def _transform_x0(self, x0: Tensor, clamp_only: bool = False) -> Tensor:
        """Pixel unets clip x0 (statically, or Imagen's dynamic threshold while sampling); latents stay free."""
        if self.is_latent:
            return x0
        if self.options.use_dynamic_thres and not clamp_only:
            return dynamic_threshold(x0, self.options.dynamic_thres_percentile)
        return static_clamp(x0)

    def denoiser(self, unet_kwargs: dict[str, Tensor], cond_scale: float = 1.0) -> ModelDenoiser:
        """The (guided) unet as a core denoiser D(x, σ) -> x0."""
        unet, learned, constrain = self.unet, self.learned_variance, self.options.learned_variance_constrain_frac

        def model_fn(x_t: Tensor, t: Tensor, self_cond: Optional[Tensor] = None):
            extra = {"self_cond": self_cond} if unet.self_cond else {}
            output = unet.forward_with_cond_scale(x_t, t, cond_scale=cond_scale, **unet_kwargs, **extra)
            prediction, raw_variance = split_unet_output(output, learned)
            if raw_variance is None:
                return prediction
            return prediction, variance_frac(raw_variance, constrain=constrain)

        return ModelDenoiser(model_fn, self.schedule, self.objective, x0_transform=self._transform_x0,
                             self_condition=bool(unet.self_cond))

    def canvas(self, size: Optional[Size] = None) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((h, w) in pixels, (h, w) in the unet's space)`` of a canvas (default the stage's square)."""
        pixels = _pair(self.image_size if size is None else size)
        if not self.is_latent:
            return pixels, pixels
        return pixels, (self.vae.get_encoded_fmap_size(pixels[0]), self.vae.get_encoded_fmap_size(pixels[1]))

    def _prepare(self, previous: Optional[Tensor], unet_kwargs: dict[str, Tensor], *, cond_scale: float,
                 generator: Optional[torch.Generator], size: Optional[Size]) -> tuple[ModelDenoiser, torch.device]:
        device = next(self.unet.parameters()).device
        kwargs = {k: v.to(device) for k, v in unet_kwargs.items()}
        if previous is not None:
            kwargs.update(self.condition(previous.to(device), training=False, generator=generator,
                                         size=self.canvas(size)[0]))
        return self.denoiser(kwargs, cond_scale if self.can_guide() else 1.0), device

    @torch.no_grad()
    def sample(self, previous: Optional[Tensor], unet_kwargs: dict[str, Tensor], *, batch: int,
               cond_scale: float = 1.0, sampler: Optional[str] = None, steps: Optional[int] = None,
               generator: Optional[torch.Generator] = None, callback: Callback = None,
               inpaint: Optional[tuple[Tensor, Tensor]] = None, inpaint_resample_times: Optional[int] = None,
               noise: Optional[Tensor] = None, eta: Optional[float] = None, size: Optional[Size] = None) -> Tensor:
        """Samples of this unet as normalised pixels (decoded when it works on latents).

        ``previous``: the previous unet's output (normalised pixels) for upsamplers.  ``inpaint``: the known
        ``(image, mask)`` in normalised pixels at any size, True where kept.  Every sampler inpaints: with
        ``'ddpm'`` (the default when inpainting) RePaint with ``inpaint_resample_times`` (default 5), with the
        others known-region replacement at each step's noise level (resampled ``inpaint_resample_times`` times,
        default 1).  ``noise``: the starting noise (standard normal, in the unet's space), e.g. from
        :meth:`invert`.  ``eta``: DDIM's η (default the decoder's ``ddim_sampling_eta``).  ``size``: an
        ``(h, w)`` canvas other than the stage's square (outpainting; the unet must be fully convolutional)."""
        if self.is_latent and not getattr(self.vae, "has_been_trained", True):
            warnings.warn(f"unet {self.number} diffuses in the latent space of a VAE that was never trained; "
                          "its samples will be meaningless", stacklevel=3)
        name, steps = default_sampler("ddpm" if inpaint is not None and sampler is None else sampler, steps,
                                      sample_timesteps=self.sample_timesteps,
                                      num_timesteps=self.schedule.num_timesteps)
        if eta is not None and name != "ddim":
            raise ValueError(f"eta={eta} only applies to the 'ddim' sampler, not {name!r}")
        eta = (self.options.ddim_sampling_eta if eta is None else float(eta)) if name == "ddim" else 0.0
        denoiser, device = self._prepare(previous, unet_kwargs, cond_scale=cond_scale, generator=generator,
                                         size=size)
        pixels, latent = self.canvas(size)
        shape = (batch, self.unet.channels, *latent)
        stage_callback = None if callback is None else (lambda info: callback({**info, "unet_number": self.number}))
        if inpaint is None:
            x0 = sample_loop(denoiser, shape, sampler=name, steps=steps, eta=eta, generator=generator,
                             callback=stage_callback, device=device, noise=noise)
            return self.decode(x0)
        known = self.encode(resize_image_to(inpaint[0], pixels).to(device))
        mask = resize_mask(resize_mask(inpaint[1], pixels), latent).to(device)
        if name == "ddpm" and noise is None:
            x0 = repaint_sample_loop(denoiser, shape, known, mask, resample_times=inpaint_resample_times or 5,
                                     steps=steps, generator=generator, callback=stage_callback, device=device)
        else:
            x0 = inpaint_loop(denoiser, shape, known, mask, sampler=name, steps=steps, eta=eta,
                              resample_times=inpaint_resample_times or 1, generator=generator,
                              callback=stage_callback, device=device, noise=noise)
        return self.decode(x0)

    @torch.no_grad()
    def invert(self, image: Tensor, previous: Optional[Tensor], unet_kwargs: dict[str, Tensor], *, steps: int,
               cond_scale: float = 1.0, generator: Optional[torch.Generator] = None,
               fixed_point_iters: Optional[int] = None) -> Tensor:
        """DDIM inversion: the noise from which :meth:`sample` with ``sampler='ddim', eta=0, steps=steps`` (same
        conditioning) returns ``image`` (normalised pixels at any size), closely.  ``previous`` as in :meth:`sample`."""
        denoiser, device = self._prepare(previous, unet_kwargs, cond_scale=cond_scale, generator=generator, size=None)
        x0 = self.encode(resize_image_to(image.to(device).float(), self.image_size))
        extra = {} if fixed_point_iters is None else {"fixed_point_iters": fixed_point_iters}
        return ddim_invert(denoiser, x0, inversion_sigmas(denoiser, steps), **extra)

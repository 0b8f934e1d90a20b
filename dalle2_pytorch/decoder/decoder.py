"""The cascading decoder of unCLIP: CLIP image embedding (+ text) -> image, through one or more unets.

Unet 1 generates a small image from the conditioning; every further unet upsamples the previous
output (cascaded diffusion, Ho et al. 2021), conditioned on it through a :class:`LowresConditioner`.
Any unet may diffuse in the latent space of a VQGAN-VAE (latent diffusion, Rombach et al. 2022).
Each unet is trained on its own (``decoder(images, unet_number=i)``) and ``sample`` chains them.

All diffusion maths (schedules, objectives, losses, samplers, guidance, RePaint) is the shared core
of :mod:`dalle2_pytorch.diffusion`; this class only wires unets, conditioning and resolutions.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from dalle2_pytorch.clip.conditioning import FrozenClipMixin
from dalle2_pytorch.decoder.cascade import CascadeOptions, CascadeStage, paste_known
from dalle2_pytorch.decoder.cascade_config import (build_stage_settings, check_sizes_fit_unets, configure_unet,
                                                   is_latent_vae, per_unet, resolve_image_sizes, resolve_vaes)
from dalle2_pytorch.decoder.conditions import DecoderConditions
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.decoder.lowres import LowresConditioner, resize_image_to
from dalle2_pytorch.diffusion import LOSS_TYPES, NoiseSchedule
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config
from dalle2_pytorch.validation import check_choice, check_finite, check_positive_int, check_range, is_int, strict_keywords

_REMOVED_KEYWORDS = {
    "clip_denoised": "removed: it did nothing in the reference; pixel-space unets always clip x0 while sampling, "
                     "latent unets never do",
    "clip_x_start": "removed: it did nothing in the reference (see clip_denoised)",
    "clip_adapter_overrides": "removed: wrap your CLIP in an adapter of dalle2_pytorch.clip.adapters yourself",
}


def check_inpaint_inputs(inpaint_image: Optional[Tensor], inpaint_mask: Optional[Tensor], *, channels: int,
                         batch_size: int) -> Optional[tuple[Tensor, Tensor]]:
    """``(image (b, c, h, w), mask (b, 1, h, w) bool)`` or None when not inpainting."""
    if inpaint_image is None and inpaint_mask is None:
        return None
    if inpaint_image is None or inpaint_mask is None:
        raise ValueError("inpainting needs both inpaint_image and inpaint_mask (bool, True where the image is kept)")
    if inpaint_image.ndim != 4 or inpaint_image.shape[1] != channels:
        raise ValueError(f"inpaint_image must have shape (batch, {channels}, height, width), "
                         f"got {tuple(inpaint_image.shape)}")
    mask = inpaint_mask
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != inpaint_image.shape[-2:]:
        raise ValueError(f"inpaint_mask must have shape (batch, height, width) matching inpaint_image "
                         f"{tuple(inpaint_image.shape)}, got {tuple(inpaint_mask.shape)}")
    if mask.dtype != torch.bool:
        if not torch.all((mask == 0) | (mask == 1)):
            raise ValueError("inpaint_mask must be boolean (or 0/1): True where inpaint_image is kept")
        mask = mask.bool()
    if inpaint_image.shape[0] != batch_size or mask.shape[0] != batch_size:
        raise ValueError(f"inpaint_image and inpaint_mask have batch sizes {inpaint_image.shape[0]} and "
                         f"{mask.shape[0]}; expected {batch_size} (the batch being sampled)")
    return inpaint_image, mask


# images more than RANGE_SLACK outside the decoder's input range get a warning (once per decoder: a [-1, 1] image
# given to a decoder taking [0, 1]; the seed README's examples train on torch.randn images, so this is no error);
# smaller excursions, such as a resampling filter's overshoot, pass.  Values beyond PIXEL_SCALE are 0-255 pixels:
# an error
RANGE_SLACK = 0.5
PIXEL_SCALE = 20.0


class Decoder(FrozenClipMixin, PretrainedMixin, nn.Module):
    """Cascade of unets that turns CLIP image embeddings (and optionally text) into images.

    Images go in and come out in ``[0, 1]`` (``auto_normalize_img=True``; with ``False`` the caller
    works in ``[-1, 1]``).  Keywords marked *per unet* take one value or a tuple with one per unet.

    Args:
        unet: a ``Unet`` or a sequence of them, lowest resolution first.  The decoder sets the flags a
            unet needs for its place in the cascade (low-res input for upsamplers, image-embedding input
            for unet 1, channels for a VAE, doubled output channels for learned variance); a unet whose
            flags already match is used as is, otherwise a copy keeping every compatible weight.
        clip: a CLIP (or adapter) used to embed images/text when embeddings are not passed in; frozen.
        image_size / image_sizes: final size (one unet) / one size per unet, strictly increasing;
            without either, the CLIP's image size.
        channels: image channels.
        vae: per-unet VQGAN-VAE (latent diffusion) for the first ``len(vae)`` unets; ``None`` entries
            (or a ``NullVQGanVAE``) diffuse in pixels.  The VAE is frozen; the unet's channels follow it.
        timesteps, sample_timesteps: *per unet* training steps; default sampling steps (DDIM when set,
            full ancestral DDPM otherwise).
        image_cond_drop_prob, text_cond_drop_prob: condition dropout while training, which makes
            classifier-free guidance (``cond_scale != 1``) possible.
        loss_type: 'l1', 'l2' or 'huber'.
        beta_schedule: *per unet*; default cosine for every unet but the last of a cascade (linear).
        predict_x_start, predict_v: *per unet* objective (x0 or v instead of ε).
        predict_x_start_for_latent_diffusion: use the x0 objective exactly for the unets with a VAE.
        learned_variance: *per unet* Improved-DDPM variance; a single bool concerns unet 1 only.
        learned_variance_constrain_frac: squash the variance interpolation with a sigmoid instead of clipping.
        vb_loss_weight: weight of the variational-bound term of learned-variance unets.
        unconditional: no CLIP, no embeddings, no text: a plain (cascaded) image diffusion model.
        condition_on_text_encodings: True makes unet 1 text-conditioned (as the seed README uses it);
            None (default) keeps each unet's own ``cond_on_text_encodings``.
        auto_normalize_img: map [0, 1] inputs to [-1, 1] inside and back on output.
        use_dynamic_thres, dynamic_thres_percentile: Imagen dynamic thresholding of x0 while sampling
            (pixel unets; otherwise a static clip to [-1, 1]).
        p2_loss_weight_gamma (*per unet*), p2_loss_weight_k: P2 loss weighting (γ = 0 turns it off).
        random_crop_sizes: *per upsampler* crop size; target and low-res input are cropped identically.
        use_noise_for_lowres_cond, use_blur_for_lowres_cond: *per upsampler* Imagen noise augmentation /
            CDM blur augmentation of the low-res input (at least one per upsampler).
        lowres_downsample_first: shrink the training low-res input to the previous unet's size first.
        blur_prob, blur_sigma, blur_kernel_size: blur augmentation (sigma/kernel may be (low, high) ranges).
        lowres_noise_sample_level: fixed noise-augmentation level in [0, 1) used while sampling.
        ddim_sampling_eta: η of the DDIM sampler (0 = deterministic).
    """

    frozen_submodules = ("clip", "vaes")   # never in training mode
    unet_class = Unet                      # what the reference loader (dalle2_pytorch.compat) builds unets with

    @strict_keywords(_REMOVED_KEYWORDS)
    @register_to_config
    def __init__(self, unet: Union[nn.Module, Sequence[nn.Module]], *, clip: Optional[nn.Module] = None,
                 image_size: Optional[int] = None, image_sizes: Optional[Sequence[int]] = None, channels: int = 3,
                 vae: Sequence[Optional[nn.Module]] = (), timesteps: Union[int, Sequence[int]] = 1000,
                 sample_timesteps: Any = None, image_cond_drop_prob: float = 0.1, text_cond_drop_prob: float = 0.5,
                 loss_type: str = "l2", beta_schedule: Any = None, predict_x_start: Any = False,
                 predict_v: Any = False, predict_x_start_for_latent_diffusion: bool = False,
                 learned_variance: Any = True, learned_variance_constrain_frac: bool = False,
                 vb_loss_weight: float = 0.001, unconditional: bool = False,
                 condition_on_text_encodings: Optional[bool] = None, auto_normalize_img: bool = True,
                 use_dynamic_thres: bool = False, dynamic_thres_percentile: float = 0.95,
                 p2_loss_weight_gamma: Any = 0.0, p2_loss_weight_k: float = 1.0, random_crop_sizes: Any = None,
                 use_noise_for_lowres_cond: Any = False, use_blur_for_lowres_cond: Any = True,
                 lowres_downsample_first: bool = True, blur_prob: float = 0.5, blur_sigma: Any = 0.6,
                 blur_kernel_size: Any = 3, lowres_noise_sample_level: float = 0.2,
                 ddim_sampling_eta: float = 0.0) -> None:
        super().__init__()
        unets = tuple(unet) if isinstance(unet, (tuple, list, nn.ModuleList)) else (unet,)
        if not unets:
            raise ValueError("unet: give at least one Unet")
        check_positive_int("channels", channels)
        check_choice("loss_type", loss_type, LOSS_TYPES)
        check_range("image_cond_drop_prob", image_cond_drop_prob, 0.0, 1.0)
        check_range("text_cond_drop_prob", text_cond_drop_prob, 0.0, 1.0)
        check_range("lowres_noise_sample_level", lowres_noise_sample_level, 0.0, 1.0, high_open=True)
        check_range("dynamic_thres_percentile", dynamic_thres_percentile, 0.0, 1.0, low_open=True)
        check_range("vb_loss_weight", vb_loss_weight, 0.0, float("inf"))

        self.num_unets = len(unets)
        self.channels = channels
        self.unconditional = bool(unconditional)
        self.auto_normalize_img = bool(auto_normalize_img)
        self.conditions = DecoderConditions(clip, unconditional=self.unconditional, channels=channels,
                                            auto_normalize_img=self.auto_normalize_img)
        self.clip = self.conditions.clip

        sizes = resolve_image_sizes(image_size, image_sizes, self.num_unets,
                                    getattr(self.clip, "image_size", None) if self.clip is not None else None)
        vaes = resolve_vaes(vae, self.num_unets, channels, sizes)
        latent = tuple(is_latent_vae(v) for v in vaes)
        if predict_x_start_for_latent_diffusion:
            predict_x_start = latent
        self.stage_settings = build_stage_settings(
            num_unets=self.num_unets, image_sizes=sizes, timesteps=timesteps, sample_timesteps=sample_timesteps,
            beta_schedule=beta_schedule, predict_x_start=predict_x_start, predict_v=predict_v,
            learned_variance=learned_variance, p2_loss_weight_gamma=p2_loss_weight_gamma,
            random_crop_sizes=random_crop_sizes, use_noise_for_lowres_cond=use_noise_for_lowres_cond,
            use_blur_for_lowres_cond=use_blur_for_lowres_cond)
        self.image_sizes = sizes
        for s, is_latent in zip(self.stage_settings, latent):
            if is_latent and s.random_crop_size is not None:
                raise ValueError(f"unet {s.number} has a VAE and random_crop_sizes={s.random_crop_size}; random "
                                 "crops of latent unets are not supported: drop one of the two")

        self.unets = nn.ModuleList(
            configure_unet(u, stage=s, vae=v, channels=channels, unconditional=self.unconditional,
                           condition_on_text_encodings=condition_on_text_encodings, clip=self.clip)
            for u, s, v in zip(unets, self.stage_settings, vaes))
        self.vaes = nn.ModuleList(vaes)
        check_sizes_fit_unets(self.unets, self.stage_settings, vaes)
        for v in self.vaes:
            v.requires_grad_(False)
        self.schedules = nn.ModuleList(NoiseSchedule(s.beta_schedule, s.timesteps) for s in self.stage_settings)
        self.lowres_conditioners = nn.ModuleList(
            LowresConditioner(downsample_first=lowres_downsample_first, use_blur=s.use_blur_for_lowres_cond,
                              blur_prob=blur_prob, blur_sigma=blur_sigma, blur_kernel_size=blur_kernel_size,
                              use_noise=s.use_noise_for_lowres_cond)
            for s in self.stage_settings[1:])
        self.conditions.check_unets(self.unets)

        self.options = CascadeOptions(
            loss_type=loss_type, p2_loss_weight_k=float(p2_loss_weight_k), vb_loss_weight=float(vb_loss_weight),
            learned_variance_constrain_frac=bool(learned_variance_constrain_frac),
            image_cond_drop_prob=float(image_cond_drop_prob), text_cond_drop_prob=float(text_cond_drop_prob),
            use_dynamic_thres=bool(use_dynamic_thres), dynamic_thres_percentile=float(dynamic_thres_percentile),
            lowres_noise_sample_level=float(lowres_noise_sample_level), ddim_sampling_eta=float(ddim_sampling_eta))
        self.can_classifier_guidance = image_cond_drop_prob > 0 or text_cond_drop_prob > 0

        self.override_config(unet=tuple(self.unets), clip=self.clip,
                             vae=tuple(v if is_latent_vae(v) else None for v in self.vaes))

    # ------------------------------------------------------------------ small helpers
    @property
    def device(self) -> torch.device:
        return self.schedules[0].betas.device

    @property
    def condition_on_text_encodings(self) -> bool:
        """True when any unet is conditioned on text encodings (then text is needed to train/sample it)."""
        return any(bool(getattr(u, "cond_on_text_encodings", False)) for u in self.unets)

    @property
    def learned_variance(self) -> tuple[bool, ...]:
        return tuple(s.learned_variance for s in self.stage_settings)

    def stage(self, unet_number: int) -> CascadeStage:
        """Unet ``unet_number`` (1-based) of the cascade with its schedule, VAE and low-res conditioner."""
        index = self.check_unet_number(unet_number) - 1
        return CascadeStage.of(
            self.stage_settings[index], unet=self.unets[index], schedule=self.schedules[index], vae=self.vaes[index],
            lowres=self.lowres_conditioners[index - 1] if index > 0 else None,
            previous_image_size=self.image_sizes[index - 1] if index > 0 else None, options=self.options)

    @property
    def stages(self) -> tuple[CascadeStage, ...]:
        """Every stage of the cascade, lowest resolution first."""
        return tuple(self.stage(number) for number in range(1, self.num_unets + 1))

    def normalize_img(self, image: Tensor) -> Tensor:
        return image * 2 - 1 if self.auto_normalize_img else image

    def unnormalize_img(self, image: Tensor) -> Tensor:
        return (image + 1) * 0.5 if self.auto_normalize_img else image

    @property
    def input_image_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.auto_normalize_img else (-1.0, 1.0)

    def check_unet_number(self, unet_number: Any, name: str = "unet_number") -> int:
        """``unet_number`` if it names a unet of this cascade (1-based), else a ValueError naming ``name``."""
        if not is_int(unet_number) or not 1 <= unet_number <= self.num_unets:
            raise ValueError(f"{name}={unet_number!r}: expected an int from 1 to {self.num_unets}")
        return unet_number

    def get_unet(self, unet_number: int) -> nn.Module:
        """The unet of the cascade numbered from 1 (lowest resolution)."""
        return self.unets[self.check_unet_number(unet_number) - 1]

    @contextmanager
    def one_unet_in_gpu(self, unet_number: Optional[int] = None, unet: Optional[nn.Module] = None) -> Iterator[None]:
        """Within the block only the chosen unet (and the non-unet parts) sit on the GPU; the other unets
        wait on the CPU.  Saves GPU memory for large cascades at the cost of copies; a no-op without CUDA."""
        if (unet_number is None) == (unet is None):
            raise ValueError("one_unet_in_gpu: pass exactly one of unet_number or unet")
        if unet_number is not None:
            unet = self.get_unet(unet_number)
        elif not any(unet is u for u in self.unets):
            raise ValueError("one_unet_in_gpu: unet is not one of this decoder's unets")
        if not torch.cuda.is_available():
            yield
            return
        cuda = torch.device("cuda")
        devices = [next(u.parameters()).device for u in self.unets]
        for name, child in self.named_children():
            if name != "unets":
                child.to(cuda)
        for u in self.unets:
            u.to(cuda if u is unet else torch.device("cpu"))
        try:
            yield
        finally:
            for u, d in zip(self.unets, devices):
                u.to(d)

    def _check_images(self, image: Any, name: str, min_size: int) -> None:
        if not isinstance(image, Tensor) or not image.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (batch, {self.channels}, height, width)")
        if image.ndim != 4:
            raise ValueError(f"{name} must have shape (batch, {self.channels}, height, width), "
                             f"got {tuple(image.shape)}")
        if image.shape[1] != self.channels:
            raise ValueError(f"{name} has {image.shape[1]} channels; this decoder takes channels={self.channels}")
        if min(image.shape[-2:]) < min_size:
            raise ValueError(f"{name} is {image.shape[-2]}x{image.shape[-1]}, smaller than this unet's image size "
                             f"{min_size}; pass images of at least {min_size}x{min_size}")
        check_finite(name, image)
        low, high = self.input_image_range
        least, most = (float(image.min()), float(image.max())) if image.numel() else (low, high)
        if least < low - RANGE_SLACK or most > high + RANGE_SLACK:
            fix = "divide 0-255 pixels by 255" if self.auto_normalize_img else "map [0, 1] images with x * 2 - 1"
            message = (f"{name} has values in [{least:.3g}, {most:.3g}] but this decoder takes images in "
                       f"[{low:g}, {high:g}] (auto_normalize_img={self.auto_normalize_img}); {fix}")
            if max(abs(least), abs(most)) > PIXEL_SCALE:
                raise ValueError(message)
            if not getattr(self, "_warned_range", False):
                self._warned_range = True
                warnings.warn(message, UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ training
    def forward(self, image: Tensor, text: Optional[Tensor] = None, image_embed: Optional[Tensor] = None,
                text_encodings: Optional[Tensor] = None, unet_number: Optional[int] = None,
                return_lowres_cond_image: bool = False):
        """Diffusion loss of one unet on a batch of images (in the decoder's input range).

        ``unet_number`` is required for a cascade.  ``image_embed`` / ``text_encodings`` are computed with
        the decoder's CLIP when not given (``text`` are token ids).  With ``return_lowres_cond_image`` the
        unet's low-res input (normalised, or latent) comes back too, for inspecting the augmentation.
        """
        if unet_number is None:
            if self.num_unets > 1:
                raise ValueError(f"unet_number is required for a cascade: pass an int from 1 to {self.num_unets}")
            unet_number = 1
        stage = self.stage(unet_number)
        self._check_images(image, "image", stage.image_size)
        check_finite("image_embed", image_embed)
        check_finite("text_encodings", text_encodings)
        embeds = self.conditions.prepare(image=image, text=text, image_embed=image_embed,
                                         text_encodings=text_encodings, batch=image.shape[0], unets=[stage.unet])
        loss, lowres = stage.loss(self.normalize_img(image), self.conditions.unet_kwargs(stage.unet, embeds))
        return (loss, lowres) if return_lowres_cond_image else loss

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, image_embed: Optional[Tensor] = None, text: Optional[Tensor] = None,
               text_encodings: Optional[Tensor] = None, batch_size: int = 1, cond_scale: Any = 1.0,
               start_at_unet_number: int = 1, stop_at_unet_number: Optional[int] = None,
               image: Optional[Tensor] = None, inpaint_image: Optional[Tensor] = None,
               inpaint_mask: Optional[Tensor] = None, inpaint_resample_times: Optional[int] = None,
               sampler: Any = None,
               steps: Any = None, generator: Optional[torch.Generator] = None,
               callback: Optional[Callable[[dict], None]] = None, one_unet_in_gpu_at_time: bool = False) -> Tensor:
        """Generate images in the decoder's input range by running the unets in order.

        ``cond_scale``, ``sampler`` and ``steps`` may be per unet.  ``sampler`` is any of the diffusion core's
        ('ddpm', 'ddim', 'dpmpp_2m', 'euler', 'heun'); by default full DDPM, or DDIM when ``steps`` (or the
        decoder's ``sample_timesteps``) is set.  To start later in the cascade (``start_at_unet_number > 1``) pass the
        lower-resolution ``image`` to upsample.  ``inpaint_image``/``inpaint_mask`` (True = keep) inpaint
        with any sampler: RePaint for 'ddpm' (the default then; ``inpaint_resample_times`` default 5), known-region
        replacement at each step's noise level for the others (resampled ``inpaint_resample_times`` times, default
        1); the kept pixels come back unchanged.  ``callback(info)`` gets the core's step info
        plus ``unet_number``.  ``one_unet_in_gpu_at_time`` offloads idle unets to the CPU (CUDA only).
        """
        start = self.check_unet_number(start_at_unet_number, "start_at_unet_number")
        stop = self.num_unets if stop_at_unet_number is None else \
            self.check_unet_number(stop_at_unet_number, "stop_at_unet_number")
        if stop < start:
            raise ValueError(f"stop_at_unet_number={stop} is before start_at_unet_number={start}")
        indices = range(start - 1, stop)
        check_finite("image_embed", image_embed)
        check_finite("text_encodings", text_encodings)
        batch = self.conditions.batch_size(image_embed=image_embed, text=text, text_encodings=text_encodings,
                                           image=image if start > 1 else None, batch_size=batch_size)
        embeds = self.conditions.prepare(image=None, text=text, image_embed=image_embed,
                                         text_encodings=text_encodings, batch=batch,
                                         unets=[self.unets[i] for i in indices])
        scales = per_unet("cond_scale", cond_scale, self.num_unets)
        samplers = per_unet("sampler", sampler, self.num_unets)
        steps_per_unet = per_unet("steps", steps, self.num_unets)
        if any(s != 1 for s in scales) and not self.can_classifier_guidance:
            raise ValueError(f"cond_scale={cond_scale!r}: this decoder was built with image_cond_drop_prob=0 and "
                             "text_cond_drop_prob=0, so it has no unconditional mode to guide with; use cond_scale=1")
        inpaint = check_inpaint_inputs(inpaint_image, inpaint_mask, channels=self.channels, batch_size=batch)
        stage_inpaint = None if inpaint is None else (self.normalize_img(inpaint[0]), inpaint[1])

        previous = None
        if start > 1:
            if image is None:
                raise ValueError(f"start_at_unet_number={start} needs image= (the lower-resolution images to upsample)")
            self._check_images(image, "image", 1)
            previous = resize_image_to(self.normalize_img(image), self.image_sizes[start - 2])

        was_training = self.training
        self.eval()
        try:
            for index in indices:
                offload = one_unet_in_gpu_at_time and torch.cuda.is_available()
                with self.one_unet_in_gpu(unet_number=index + 1) if offload else nullcontext():
                    stage = self.stage(index + 1)
                    previous = stage.sample(
                        previous, self.conditions.unet_kwargs(stage.unet, embeds), batch=batch,
                        cond_scale=scales[index], sampler=samplers[index], steps=steps_per_unet[index],
                        generator=generator, callback=callback, inpaint=stage_inpaint,
                        inpaint_resample_times=inpaint_resample_times)
        finally:
            self.train(was_training)
        low, high = self.input_image_range
        output = self.unnormalize_img(previous).clamp(low, high)
        if inpaint is not None:
            output = paste_known(output, inpaint[0], inpaint[1])
        return output

    # ------------------------------------------------------------------ reference checkpoints
    @classmethod
    def from_reference_checkpoint(cls, path: str, kwargs: dict, *, clip: Optional[nn.Module] = None,
                                  strict: bool = True, version: Optional[str] = None,
                                  use_ema: bool = True) -> "Decoder":
        """Build a decoder from a DALLE2-pytorch checkpoint, 0.15.x to 1.15.6 (see :mod:`dalle2_pytorch.compat`).

        ``version`` forces the writing release (default: recorded in the file, else detected from its
        keys); ``use_ema=False`` takes a trainer save's online ``model`` instead of ``ema_model``.
        """
        from dalle2_pytorch.compat.reference import load_reference_decoder

        return load_reference_decoder(cls, path, kwargs, clip=clip, strict=strict, version=version, use_ema=use_ema)

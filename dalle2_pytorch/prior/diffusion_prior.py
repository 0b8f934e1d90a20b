"""DiffusionPrior: a Gaussian diffusion over CLIP image embeddings, conditioned on text.

Training (``forward``) noises the image embedding (scaled by ``image_embed_scale``, √dim by default,
so that its entries have roughly unit variance, as Katherine Crowson suggested for the reference),
asks the network for x0 (the paper's choice), ε or v and returns the regression loss.  Sampling
runs any sampler of the shared diffusion core (:mod:`dalle2_pytorch.diffusion`) over the network,
optionally with classifier-free guidance, and ``sample`` keeps the best of several candidates per
text by cosine similarity to the text embedding (the paper's rerank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, default_sampler, diffusion_loss, l2norm_clamp,
                                      objective_from_flags, sample_loop, self_conditioning_estimate, training_target)
from dalle2_pytorch.diffusion.losses import check_loss_type
from dalle2_pytorch.diffusion.noise import randn
from dalle2_pytorch.clip.conditioning import (FrozenClipMixin, check_embedding, check_text_encodings,
                                              frozen_clip_adapter, resolve_embed_dim)
from dalle2_pytorch.prior.conditioning import embed_image, embed_text, rerank_by_text_similarity
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config
from dalle2_pytorch.validation import check_finite, strict_keywords


class DiffusionPrior(FrozenClipMixin, PretrainedMixin, nn.Module):
    """Text embedding → image embedding by diffusion.

    Args:
        net: the :class:`DiffusionPriorNetwork`; its ``dim`` must equal the embedding width.
        clip: a frozen CLIP (or adapter) used to embed raw ``text``/``image`` inputs; optional when
            training on precomputed embeddings.
        image_embed_dim: embedding width; required without ``clip`` (else the clip's ``dim_latent``).
        timesteps: training diffusion steps.  sample_timesteps: default sampling steps (None: the rule
            of :func:`~dalle2_pytorch.diffusion.default_sampler`).
        cond_drop_prob: probability of dropping the text and, independently, the noised image embed
            in training (classifier-free guidance); ``text_cond_drop_prob``/``image_cond_drop_prob``
            set each one apart.  Guidance (``cond_scale != 1``) needs both to be > 0.
        loss_type: ``'l1'``, ``'l2'`` or ``'huber'``.
        predict_x_start: predict x0 (the paper) rather than ε.  predict_v: predict v (wins over both).
        beta_schedule: ``'cosine'``, ``'linear'``, ``'quadratic'``, ``'sigmoid'`` or ``'jsd'``.
        condition_on_text_encodings: also feed per-token text encodings (needs ``text`` or ``text_encodings``).
        sampling_clamp_l2norm: project every x0 estimate while sampling onto the sphere of radius
            ``image_embed_scale`` (the embedding analogue of clipping pixels to [-1, 1]).
        sampling_final_clamp_l2norm: project the final sample onto that sphere.
        training_clamp_l2norm: project the x0 prediction onto that sphere before the loss (x0 objective only).
        init_image_embed_l2norm: start sampling from noise projected onto that sphere.
        image_embed_scale: the embedding's scale in diffusion space (default √image_embed_dim).
    """

    network_class = DiffusionPriorNetwork   # what the reference loader (dalle2_pytorch.compat) builds networks with

    @strict_keywords()
    @register_to_config
    def __init__(self, net: DiffusionPriorNetwork, *, clip: Any = None, image_embed_dim: int | None = None,
                 timesteps: int = 1000, sample_timesteps: int | None = None, cond_drop_prob: float = 0.0,
                 text_cond_drop_prob: float | None = None, image_cond_drop_prob: float | None = None,
                 loss_type: str = "l2", predict_x_start: bool = True, predict_v: bool = False,
                 beta_schedule: str = "cosine", condition_on_text_encodings: bool = True,
                 sampling_clamp_l2norm: bool = False, sampling_final_clamp_l2norm: bool = False,
                 training_clamp_l2norm: bool = False, init_image_embed_l2norm: bool = False,
                 image_embed_scale: float | None = None) -> None:
        super().__init__()
        if not isinstance(net, DiffusionPriorNetwork):
            raise TypeError(f"net must be a DiffusionPriorNetwork, got {type(net).__name__}")

        self.clip = frozen_clip_adapter(clip)
        self.image_embed_dim = resolve_embed_dim(self.clip, image_embed_dim)
        if net.dim != self.image_embed_dim:
            source = "clip.dim_latent" if image_embed_dim is None else "image_embed_dim"
            raise ValueError(f"the network's dim ({net.dim}) must equal the image embedding dim "
                             f"({self.image_embed_dim}, from {source})")
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
        if net.time_embed.num_timesteps is not None and net.time_embed.num_timesteps < timesteps:
            raise ValueError(f"the network embeds {net.time_embed.num_timesteps} discrete timesteps "
                             f"(num_timesteps) but the prior uses timesteps={timesteps}")
        if sample_timesteps is not None and (isinstance(sample_timesteps, bool) or not isinstance(sample_timesteps, int)
                                             or not 1 <= sample_timesteps <= timesteps):
            raise ValueError(f"sample_timesteps must be an integer in [1, {timesteps}], got {sample_timesteps!r}")
        self.text_cond_drop_prob = cond_drop_prob if text_cond_drop_prob is None else text_cond_drop_prob
        self.image_cond_drop_prob = cond_drop_prob if image_cond_drop_prob is None else image_cond_drop_prob
        for name, value in (("cond_drop_prob", cond_drop_prob), ("text_cond_drop_prob", self.text_cond_drop_prob),
                            ("image_cond_drop_prob", self.image_cond_drop_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.objective = objective_from_flags(predict_x_start, predict_v)
        if training_clamp_l2norm and self.objective != "x0":
            raise ValueError(f"training_clamp_l2norm applies to x0 predictions; this prior predicts {self.objective!r} "
                             "(set predict_x_start=True, predict_v=False)")
        self.loss_type = check_loss_type(loss_type)
        if image_embed_scale is not None and not image_embed_scale > 0:
            raise ValueError(f"image_embed_scale must be > 0, got {image_embed_scale!r}")

        self.net = net
        self.noise_schedule = NoiseSchedule(beta_schedule, timesteps)
        self.sample_timesteps = sample_timesteps
        self.condition_on_text_encodings = condition_on_text_encodings
        self.image_embed_scale = (float(image_embed_scale) if image_embed_scale is not None
                                  else self.image_embed_dim ** 0.5)
        self.sampling_clamp_l2norm = sampling_clamp_l2norm
        self.sampling_final_clamp_l2norm = sampling_final_clamp_l2norm
        self.training_clamp_l2norm = training_clamp_l2norm
        self.init_image_embed_l2norm = init_image_embed_l2norm

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.net.learned_query.device

    @property
    def can_classifier_guidance(self) -> bool:
        """Guidance needs a network that learned the null pass: both conditions were dropped in training."""
        return self.text_cond_drop_prob > 0 and self.image_cond_drop_prob > 0

    def l2norm_clamp_embed(self, image_embed: torch.Tensor) -> torch.Tensor:
        return l2norm_clamp(image_embed, self.image_embed_scale)

    # ------------------------------------------------------------------ training
    def forward(self, text: torch.Tensor | None = None, image: torch.Tensor | None = None,
                text_embed: torch.Tensor | None = None, image_embed: torch.Tensor | None = None,
                text_encodings: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion loss on a batch of (text, image) pairs, raw or as precomputed embeddings.

        Pass exactly one of ``text``/``text_embed`` and one of ``image``/``image_embed``; the
        caller's tensors are never modified.
        """
        text_embed, text_encodings = embed_text(
            self.clip, text=text, text_embed=text_embed, text_encodings=text_encodings,
            dim=self.image_embed_dim, need_encodings=self.condition_on_text_encodings)
        image_embed = embed_image(self.clip, image=image, image_embed=image_embed, dim=self.image_embed_dim)
        for name, value in (("text_embed", text_embed), ("image_embed", image_embed),
                            ("text_encodings", text_encodings)):
            check_finite(name, value)
        if image_embed.shape[0] != text_embed.shape[0]:
            raise ValueError(f"got {text_embed.shape[0]} texts but {image_embed.shape[0]} images")
        text_cond = {"text_embed": text_embed, "text_encodings": text_encodings}

        x0 = image_embed * self.image_embed_scale
        times = self.noise_schedule.sample_random_times(x0.shape[0], device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.noise_schedule.q_sample(x0, times, noise)

        self_cond = self_conditioning_estimate(lambda: self.net(x_t, times, **text_cond), self.noise_schedule,
                                               self.objective, x_t, times, enabled=self.net.self_cond)

        pred = self.net(x_t, times, self_cond=self_cond, text_cond_drop_prob=self.text_cond_drop_prob,
                        image_cond_drop_prob=self.image_cond_drop_prob, **text_cond)
        if self.training_clamp_l2norm:
            pred = self.l2norm_clamp_embed(pred)
        target = training_target(self.noise_schedule, self.objective, x0, noise, times)
        return diffusion_loss(pred, target, self.loss_type)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def p_sample_loop(self, shape: tuple[int, int], text_cond: dict[str, Optional[torch.Tensor]], *,
                      cond_scale: float = 1.0, timesteps: int | None = None, sampler: str | None = None,
                      eta: float = 0.0, generator: torch.Generator | None = None,
                      callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Sample image embeddings (in CLIP scale, i.e. divided by ``image_embed_scale``).

        ``text_cond`` holds ``text_embed`` (b, dim) and, for a prior conditioned on them,
        ``text_encodings``.  ``sampler`` is any of the core's (``'ddpm'``, ``'ddim'``, ``'dpmpp_2m'``,
        ``'euler'``, ``'heun'``); it and ``timesteps`` default by the rule of
        :func:`~dalle2_pytorch.diffusion.default_sampler` (``sample_timesteps`` when set; ``'ddpm'`` over
        the whole schedule, ``'ddim'`` over fewer steps).
        """
        if cond_scale != 1 and not self.can_classifier_guidance:
            raise ValueError(f"cond_scale={cond_scale} needs classifier-free guidance, but this prior was trained "
                             f"with text_cond_drop_prob={self.text_cond_drop_prob} and image_cond_drop_prob="
                             f"{self.image_cond_drop_prob}; both must be > 0 (set cond_drop_prob) for guidance")
        text_embed = text_cond.get("text_embed")
        text_encodings = text_cond.get("text_encodings") if self.condition_on_text_encodings else None
        if text_embed is None:
            raise ValueError("text_cond must hold 'text_embed'")
        if self.condition_on_text_encodings and text_encodings is None:
            raise ValueError("this prior is conditioned on text encodings: text_cond must hold 'text_encodings'")
        batch = check_embedding("text_embed", text_embed, self.image_embed_dim).shape[0]
        check_finite("text_embed", text_embed)
        check_finite("text_encodings", text_encodings)
        if text_encodings is not None:
            check_text_encodings(text_encodings, self.image_embed_dim, batch)
        if tuple(shape) != (batch, self.image_embed_dim):
            raise ValueError(f"shape must be ({batch}, {self.image_embed_dim}), got {tuple(shape)}")
        sampler, steps = default_sampler(sampler, timesteps, sample_timesteps=self.sample_timesteps,
                                         num_timesteps=self.noise_schedule.num_timesteps)

        dtype = self.net.learned_query.dtype  # the samplers work in float32; the network may not
        text_embed = text_embed.to(dtype)
        text_encodings = None if text_encodings is None else text_encodings.to(dtype)

        cache = None if self.net.training else self.net.prefix_cache()  # this loop's text keys/values

        def model_fn(x: torch.Tensor, t: torch.Tensor, self_cond: torch.Tensor | None = None) -> torch.Tensor:
            return self.net.guided(x.to(dtype), t, text_embed, text_encodings,
                                   None if self_cond is None else self_cond.to(dtype), cond_scale, cache=cache)

        denoiser = ModelDenoiser(model_fn, self.noise_schedule, self.objective, self_condition=self.net.self_cond,
                                 x0_transform=self.l2norm_clamp_embed if self.sampling_clamp_l2norm else None)
        device = text_embed.device
        noise = randn(tuple(shape), generator=generator, device=device)
        if self.init_image_embed_l2norm:
            noise = self.l2norm_clamp_embed(noise)
        x0 = sample_loop(denoiser, tuple(shape), sampler=sampler, steps=steps, eta=eta, generator=generator,
                         callback=callback, device=device, noise=noise)
        if self.sampling_final_clamp_l2norm:
            x0 = self.l2norm_clamp_embed(x0)
        return x0 / self.image_embed_scale

    @torch.no_grad()
    def sample(self, text: torch.Tensor | None = None, num_samples_per_batch: int = 2, cond_scale: float = 1.0,
               timesteps: int | None = None, *, sampler: str | None = None, text_embed: torch.Tensor | None = None,
               text_encodings: torch.Tensor | None = None, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One image embedding per text: draw ``num_samples_per_batch`` candidates, keep the one closest to the text.

        Give ``text`` tokens (embedded by the prior's CLIP) or precomputed ``text_embed`` (and
        ``text_encodings``).  Returns (b, dim) in CLIP scale.
        """
        if isinstance(num_samples_per_batch, bool) or not isinstance(num_samples_per_batch, int) \
                or num_samples_per_batch < 1:
            raise ValueError(f"num_samples_per_batch must be a positive integer, got {num_samples_per_batch!r}")
        was_training = self.training
        self.eval()
        try:
            text_embed, text_encodings = embed_text(
                self.clip, text=text, text_embed=text_embed, text_encodings=text_encodings,
                dim=self.image_embed_dim, need_encodings=self.condition_on_text_encodings)
            r = num_samples_per_batch
            cond = {"text_embed": text_embed.repeat_interleave(r, dim=0),
                    "text_encodings": None if text_encodings is None else text_encodings.repeat_interleave(r, dim=0)}
            candidates = self.p_sample_loop((text_embed.shape[0] * r, self.image_embed_dim), cond,
                                            cond_scale=cond_scale, timesteps=timesteps, sampler=sampler, eta=eta,
                                            generator=generator)
        finally:
            self.train(was_training)
        return rerank_by_text_similarity(candidates, text_embed, r)

    # ------------------------------------------------------------------ reference checkpoints
    @classmethod
    def from_reference_checkpoint(cls, path: str | Path, config: dict[str, Any] | str | Path, *,
                                  clip: Any = None, strict: bool = True, version: str | None = None,
                                  use_ema: bool = True) -> "DiffusionPrior":
        """Build a prior from a DALLE2-pytorch checkpoint, 0.15.x to 1.15.6 (see :mod:`dalle2_pytorch.compat`).

        ``path``: the reference ``DiffusionPrior.state_dict()`` as ``.safetensors``, or a ``.pt``/``.pth``
        file (read with ``torch.load(weights_only=True)``): a bare state dict or a trainer save, whose
        ``ema_model`` is taken (``use_ema=False``: its ``model``).  ``version`` forces the writing
        release (default: recorded in the file, else detected from its keys).
        ``config``: a dict (or JSON file) ``{"net": DiffusionPriorNetwork kwargs, "prior": DiffusionPrior
        kwargs, "image_embed_dim": int}``, the layout of the reference fixtures' ``kwargs``.
        ``strict=False`` skips keys the loader does not convert instead of refusing the file.
        """
        from dalle2_pytorch.compat.reference import load_reference_prior

        return load_reference_prior(cls, path, config, clip=clip, strict=strict, version=version, use_ema=use_ema)

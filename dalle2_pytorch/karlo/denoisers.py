"""Karlo's diffusers networks behind our denoiser interface (:class:`~dalle2_pytorch.diffusion.ModelDenoiser`).

Each ``*_model_fn`` returns ``model_fn(x_vp, t) -> raw output`` with the guidance and conditioning of diffusers'
``UnCLIPPipeline`` folded in, so that every sampler of :mod:`dalle2_pytorch.diffusion` drives it at any step count:

* prior (``PriorTransformer``): predicts x0 in CLIP-statistics-normalised space; its unconditional branch is the
  text encoder's output for the empty prompt; guided output ``uncond + scale * (cond - uncond)``;
* decoder (``UNet2DConditionModel``): ε plus learned-range variance channels; the conditional and unconditional
  branches differ in the text (empty prompt) and in the image embedding (``text_proj``'s learned null
  embedding); only ε is guided, the variance is the conditional branch's (as in ``UnCLIPPipeline``);
* super-resolution (``UNet2DModel`` x 2): ε, no guidance; ``super_res_last`` runs at the lowest noise level
  (training step 0, where every sampling run ends) and ``super_res_first`` everywhere else.

:class:`SchedulerSettings` reads an ``UnCLIPScheduler`` config: its ``squaredcos_cap_v2`` betas are our
``NoiseSchedule('cosine', T)``, ``prediction_type`` the objective, ``clip_sample`` the x0 clamp.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalle2_pytorch.diffusion import ModelDenoiser, NoiseSchedule, classifier_free_guidance, static_clamp

PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0"}
VARIANCE_TYPES = ("fixed_small_log", "learned_range")


@dataclass(frozen=True)
class SchedulerSettings:
    """What an ``UnCLIPScheduler`` config says about a stage: training steps, objective, variance and x0 clamp."""

    num_train_timesteps: int = 1000
    objective: str = "eps"
    variance_type: str = "fixed_small_log"
    clip_range: Optional[float] = 1.0  # None: no clamp of the x0 estimate

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "scheduler") -> "SchedulerSettings":
        """Read an ``UnCLIPScheduler`` ``scheduler_config.json`` dict (missing keys take diffusers' defaults)."""
        if config.get("beta_schedule", "squaredcos_cap_v2") != "squaredcos_cap_v2":
            raise ValueError(f"{source}: beta_schedule={config['beta_schedule']!r}; Karlo's UnCLIPScheduler "
                             "only has 'squaredcos_cap_v2'")
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"{source}: prediction_type={prediction!r}; expected one of {sorted(PREDICTION_TYPES)}")
        variance = config.get("variance_type", "fixed_small_log")
        if variance not in VARIANCE_TYPES:
            raise ValueError(f"{source}: variance_type={variance!r}; expected one of {list(VARIANCE_TYPES)}")
        clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", True) else None
        return cls(int(config.get("num_train_timesteps", 1000)), PREDICTION_TYPES[prediction], variance, clip)

    def schedule(self) -> NoiseSchedule:
        """The training schedule: ``squaredcos_cap_v2`` is Nichol & Dhariwal's cosine schedule, β capped at 0.999."""
        return NoiseSchedule("cosine", self.num_train_timesteps)

    def denoiser(self, model_fn: Callable[..., Any], schedule: Optional[NoiseSchedule] = None) -> ModelDenoiser:
        """``model_fn`` as a denoiser with this stage's objective and x0 clamp."""
        clamp = None if self.clip_range is None else functools.partial(static_clamp, limit=self.clip_range)
        return ModelDenoiser(model_fn, schedule if schedule is not None else self.schedule(), self.objective,
                             x0_transform=clamp)


class TextEncoding(NamedTuple):
    """The CLIP text encoder's output for a batch of prompts: projected embeddings (b, d), last hidden states
    (b, n, w) and the attention mask (b, n) of the padded tokens."""

    embeds: Tensor
    hidden: Tensor
    mask: Tensor

    def cat(self, other: "TextEncoding") -> "TextEncoding":
        """This batch followed by ``other`` (unconditional rows first, as diffusers orders them)."""
        return TextEncoding(*(torch.cat([a, b]) for a, b in zip(self, other)))

    def expand(self, batch: int) -> "TextEncoding":
        """A one-row encoding (the empty prompt) repeated ``batch`` times."""
        return TextEncoding(*(x.expand(batch, *x.shape[1:]) for x in self))


def _model_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _twice(t: Tensor) -> Tensor:
    return torch.cat([t, t])


def prior_model_fn(prior: nn.Module, cond: TextEncoding, null: TextEncoding, scale: float) -> Callable[..., Tensor]:
    """``model_fn(x_vp, t)`` of a diffusers ``PriorTransformer``: the guided x0 estimate, normalised by the CLIP
    statistics (``prior.post_process_latents`` maps a sample back to CLIP space); ``null`` is the empty prompt's
    encoding, one row per row of ``cond``."""
    dtype = _model_dtype(prior)

    def run(x: Tensor, t: Tensor, text: TextEncoding) -> Tensor:
        out = prior(x.to(dtype), timestep=t, proj_embedding=text.embeds.to(dtype),
                    encoder_hidden_states=text.hidden.to(dtype), attention_mask=text.mask)
        return out.predicted_image_embedding.float()

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        if scale == 1:
            return run(x, t, cond)
        uncond, conditioned = run(_twice(x), _twice(t), null.cat(cond)).chunk(2)
        return classifier_free_guidance(conditioned, uncond, scale)

    return model_fn


class DecoderConditioning(NamedTuple):
    """The decoder unet's conditioning from ``text_proj``: cross-attention tokens, the additive time embedding and
    the attention mask, with the unconditional rows first when ``guided``."""

    hidden: Tensor
    additive: Tensor
    mask: Tensor
    guided: bool


def decoder_conditioning(text_proj: nn.Module, image_embed: Tensor, cond: TextEncoding, null: TextEncoding,
                         guided: bool) -> DecoderConditioning:
    """Run ``UnCLIPTextProjModel`` once for a sampling run: with ``guided``, the unconditional rows get the empty
    prompt and the learned null image embedding (``learned_classifier_free_guidance_embeddings``)."""
    dtype = _model_dtype(text_proj)
    text = null.cat(cond) if guided else cond
    hidden, additive = text_proj(image_embeddings=image_embed.to(dtype), prompt_embeds=text.embeds.to(dtype),
                                 text_encoder_hidden_states=text.hidden.to(dtype), do_classifier_free_guidance=guided)
    mask = F.pad(text.mask, (text_proj.clip_extra_context_tokens, 0), value=True)
    return DecoderConditioning(hidden, additive, mask, guided)


def learned_range_frac(raw: Tensor) -> Tensor:
    """``UnCLIPScheduler``'s learned-range fraction (v + 1) / 2 between log β̃ (0) and log β (1), unclamped."""
    return (raw.float() + 1) / 2


def decoder_model_fn(decoder: nn.Module, conditioning: DecoderConditioning, scale: float,
                     learned_variance: bool) -> Callable[..., Any]:
    """``model_fn(x_vp, t)`` of the text-conditioned ``UNet2DConditionModel``: the guided ε and, with
    ``learned_variance``, the conditional branch's variance fraction (our DDPM sampler uses it)."""
    dtype = _model_dtype(decoder)
    if conditioning.guided != (scale != 1):
        raise ValueError(f"decoder conditioning was built with guided={conditioning.guided} for cond_scale={scale}")

    def model_fn(x: Tensor, t: Tensor) -> Any:
        channels = x.shape[1]
        x_in, t_in = (_twice(x), _twice(t)) if conditioning.guided else (x, t)
        out = decoder(sample=x_in.to(dtype), timestep=t_in, encoder_hidden_states=conditioning.hidden,
                      class_labels=conditioning.additive, attention_mask=conditioning.mask).sample.float()
        if conditioning.guided:
            uncond, conditioned = out.chunk(2)
            eps = classifier_free_guidance(conditioned[:, :channels], uncond[:, :channels], scale)
        else:
            conditioned, eps = out, out[:, :channels]
        if learned_variance and out.shape[1] == 2 * channels:
            return eps, learned_range_frac(conditioned[:, channels:])
        return eps

    return model_fn


def upscale_low_res(image: Tensor, size: int) -> Tensor:
    """The decoder's 64 px output, clamped to [-1, 1], resized to the super-resolution size as Karlo does it
    (bicubic with antialiasing)."""
    return F.interpolate(image.clamp(-1, 1), size=[size, size], mode="bicubic", align_corners=False, antialias=True)


def super_res_model_fn(first: nn.Module, last: nn.Module, low_res: Tensor, last_step: int = 0) -> Callable[..., Tensor]:
    """``model_fn(x_vp, t)`` of the two super-resolution ``UNet2DModel``s conditioned on the upscaled ``low_res``
    (channels concatenated): ``last`` at training step ``last_step`` (the lowest noise level), ``first`` elsewhere."""
    dtype = _model_dtype(first)

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        x_in = torch.cat([x, low_res.to(x.dtype)], dim=1).to(dtype)
        at_last = t == last_step
        if bool(at_last.all()):
            return last(sample=x_in, timestep=t).sample.float()
        if not bool(at_last.any()):
            return first(sample=x_in, timestep=t).sample.float()
        out = first(sample=x_in, timestep=t).sample.float()
        out[at_last] = last(sample=x_in[at_last], timestep=t[at_last]).sample.float()
        return out

    return model_fn

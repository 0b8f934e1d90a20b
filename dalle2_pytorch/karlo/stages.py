"""Karlo's three stages as modules driven by our samplers: text encoder, prior, decoder cascade (64 px + super-res).

Each stage holds its diffusers modules and its training schedule and samples with
:func:`dalle2_pytorch.diffusion.sample_loop`, so any of our samplers runs it at any step count.  ``place`` (given
by the pipeline) is a context manager that puts a module on the execution device while it runs, and takes it back
to the CPU afterwards when the pipeline saves memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from dalle2_pytorch.diffusion import NoiseSchedule, RowGenerators, default_sampler, sample_loop
from dalle2_pytorch.karlo.denoisers import (SchedulerSettings, TextEncoding, decoder_conditioning, decoder_model_fn,
                                            prior_model_fn, super_res_model_fn, upscale_low_res)

Generator = Union[torch.Generator, RowGenerators, None]
Place = Callable[..., ContextManager[None]]


def stay(*modules: nn.Module) -> ContextManager[None]:
    """The ``place`` of a pipeline that keeps every module where it is."""
    return contextlib.nullcontext()


def run_stage(denoiser_of: Callable[[NoiseSchedule], Any], schedule: NoiseSchedule, shape: tuple[int, ...], *,
              sampler: Optional[str], steps: Optional[int], generator: Generator, device: torch.device,
              callback: Optional[Callable[[dict], None]] = None) -> Tensor:
    """One sampling run of a stage: our default sampler rule, then :func:`sample_loop` on ``device``."""
    name, steps = default_sampler(sampler, steps, sample_timesteps=None, num_timesteps=schedule.num_timesteps)
    schedule.to(device)
    return sample_loop(denoiser_of(schedule), shape, sampler=name, steps=steps, generator=generator, device=device,
                       callback=callback)


class KarloTextEncoder(nn.Module):
    """Karlo's CLIP text encoder and tokenizer: prompts (or token ids) -> :class:`TextEncoding`."""

    def __init__(self, text_encoder: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.net = text_encoder
        self.tokenizer = tokenizer
        self.max_text_len = int(tokenizer.model_max_length)

    def tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, padded to the model length and cut to it (as ``UnCLIPPipeline`` does)."""
        out = self.tokenizer(list(texts), padding="max_length", max_length=self.max_text_len, truncation=True,
                             return_tensors="pt")
        return out.input_ids, out.attention_mask.bool()

    def mask_of(self, ids: Tensor) -> Tensor:
        """The attention mask of padded token ids: every position up to and including the first end token."""
        is_end = ids == self.tokenizer.eos_token_id
        return (is_end.long().cumsum(dim=1) - is_end.long()) == 0

    def forward(self, text: Union[Sequence[str], Tensor], device: torch.device) -> TextEncoding:
        if isinstance(text, Tensor):
            if text.is_floating_point() or text.ndim != 2:
                raise ValueError(f"text as a tensor must hold token ids of shape (batch, length), got {text.dtype} "
                                 f"{tuple(text.shape)}")
            ids, mask = text.long(), self.mask_of(text)
        else:
            ids, mask = self.tokens(text)
        out = self.net(ids.to(device))
        return TextEncoding(out.text_embeds.float(), out.last_hidden_state.float(), mask.to(device))


class KarloPrior(nn.Module):
    """The diffusers ``PriorTransformer`` (x0 objective, CLIP-statistics normalisation) as a prior stage."""

    can_classifier_guidance = True
    clip = None  # Karlo's folder has no CLIP image encoder

    def __init__(self, prior: nn.Module, settings: SchedulerSettings) -> None:
        super().__init__()
        self.net = prior
        self.settings = settings
        self.schedules = (settings.schedule(),)  # a tuple: not a submodule, so .to(dtype) leaves it float32

    @property
    def embed_dim(self) -> int:
        return int(self.net.config.embedding_dim)

    def sample(self, cond: TextEncoding, null: Optional[TextEncoding], *, cond_scale: float, sampler: Optional[str],
               steps: Optional[int], generator: Generator, device: torch.device, place: Place = stay) -> Tensor:
        """CLIP image embeddings (b, d) for the text encodings; ``null`` (the empty prompt's) is needed to guide."""
        batch = cond.embeds.shape[0]
        with place(self.net):
            latents = run_stage(lambda schedule: self.settings.denoiser(
                prior_model_fn(self.net, cond, null, cond_scale), schedule), self.schedules[0],
                (batch, self.embed_dim), sampler=sampler, steps=steps, generator=generator, device=device)
            # the prior works in CLIP-statistics-normalised space (PriorTransformer.post_process_latents)
            return latents * self.net.clip_std.float().to(device) + self.net.clip_mean.float().to(device)


class KarloDecoder(nn.Module):
    """Karlo's decoder cascade as two stages: ``text_proj`` + the text-conditioned 64 px unet (ε, learned-range
    variance, guidance), then the super-resolution pair (``super_res_first`` / ``super_res_last``)."""

    can_classifier_guidance = True  # the first stage; the super-resolution stage is not conditioned
    clip = None
    condition_on_text_encodings = True
    num_unets = 2

    def __init__(self, text_proj: nn.Module, decoder: nn.Module, super_res_first: nn.Module,
                 super_res_last: nn.Module, settings: SchedulerSettings, super_res_settings: SchedulerSettings) -> None:
        super().__init__()
        self.text_proj = text_proj
        self.unet = decoder
        self.super_res_first = super_res_first
        self.super_res_last = super_res_last
        self.settings = (settings, super_res_settings)
        self.schedules = (settings.schedule(), super_res_settings.schedule())
        self.image_sizes = (int(decoder.config.sample_size), int(super_res_first.config.sample_size))

    def sample(self, image_embed: Tensor, cond: TextEncoding, null: Optional[TextEncoding], *,
               cond_scale: float, sampler: Sequence[Optional[str]], steps: Sequence[Optional[int]],
               generator: Generator, device: torch.device, place: Place = stay,
               callback: Optional[Callable[[dict], None]] = None) -> Tensor:
        """Images in [-1, 1] at the super-resolution size for CLIP image embeddings and their text encodings."""
        batch = image_embed.shape[0]
        settings, sr_settings = self.settings

        def report(unet_number: int) -> Optional[Callable[[dict], None]]:
            return None if callback is None else (lambda info: callback({**info, "unet_number": unet_number}))

        with place(self.text_proj, self.unet):
            conditioning = decoder_conditioning(self.text_proj, image_embed, cond, null, cond_scale != 1)
            model_fn = decoder_model_fn(self.unet, conditioning, cond_scale,
                                        settings.variance_type == "learned_range")
            channels = int(self.unet.config.in_channels)
            low_res = run_stage(lambda schedule: settings.denoiser(model_fn, schedule), self.schedules[0],
                                (batch, channels, self.image_sizes[0], self.image_sizes[0]), sampler=sampler[0],
                                steps=steps[0], generator=generator, device=device, callback=report(1))
        with place(self.super_res_first, self.super_res_last):
            upscaled = upscale_low_res(low_res, self.image_sizes[1])
            model_fn = super_res_model_fn(self.super_res_first, self.super_res_last, upscaled)
            channels = int(self.super_res_first.config.in_channels) // 2
            return run_stage(lambda schedule: sr_settings.denoiser(model_fn, schedule), self.schedules[1],
                             (batch, channels, self.image_sizes[1], self.image_sizes[1]), sampler=sampler[1],
                             steps=steps[1], generator=generator, device=device, callback=report(2))

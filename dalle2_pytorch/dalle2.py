"""DALLE2: text -> CLIP tokens -> prior (image embedding) -> decoder cascade -> images.

    dalle2 = DALLE2(prior=diffusion_prior, decoder=decoder)
    images = dalle2(['a butterfly trying to escape a tornado'], cond_scale=2.)   # (1, 3, H, W) in [0, 1]

Strings are tokenised with the CLIP BPE tokenizer (start/end tokens included, cut to the CLIP's text
length); token-id tensors are used as given.  The prior draws ``prior_num_samples`` candidate image
embeddings per text and keeps the one closest to the text embedding; the decoder turns it into
images.  Pass ``seed=`` (or your own ``generator=``) for reproducible images.  Settings a call leaves
out come from the pipeline's :class:`SamplingDefaults`, which ``save_pretrained`` stores in ``pipeline.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from dalle2_pytorch.diffusion.noise import RowGenerators
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.images import to_pil_images
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.pipeline_files import (COMPONENTS, PIPELINE_FILE, SamplingDefaults, find_layout,
                                           pipeline_file_contents, read_legacy_sampling, read_pipeline_file)
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config, resolve_class, save_json
from dalle2_pytorch.validation import check_seed, strict_keywords

TextInput = Union[str, Sequence[str], torch.Tensor]


def tokenize_for(clip: Any, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP BPE tokens of ``texts``, cut to the CLIP's text length."""
    from dalle2_pytorch.clip.tokenizer import tokenize

    length = int(getattr(clip, "max_text_len", 77)) if clip is not None else 77
    return tokenize(list(texts), context_length=length, truncate=True).to(device)


class DALLE2(PretrainedMixin, nn.Module):
    """The unCLIP pipeline: a trained :class:`DiffusionPrior` and :class:`Decoder` turned into text-to-image.

    Args:
        prior: the diffusion prior (text -> CLIP image embedding); it needs a CLIP to embed text.
        decoder: the decoder (image embedding [+ text] -> image); must not be unconditional.
        prior_num_samples: candidate image embeddings per text; the one most similar to the text wins.
        sampling: the default sampling settings (a :class:`SamplingDefaults`, or its JSON form
            ``{"prior": {...}, "decoder": {...}}``); also settable later as ``dalle2.sampling_defaults``.

    Saved layout (``save_pretrained(dir)``; ``from_pretrained(dir)`` is the one loader of a pipeline)::

        dir/pipeline.json   {"class": "dalle2_pytorch.dalle2:DALLE2", "format_version": 1, "library_version",
                             "components": {"prior": "<module>:DiffusionPrior", "decoder": "<module>:Decoder"},
                             "prior_num_samples": 2,
                             "sampling": {"prior":   {"sampler": "ddim", "steps": 16, "cond_scale": 1.0},
                                          "decoder": {"sampler": "dpmpp_2m", "steps": [20, 10],
                                                      "cond_scale": [3.0, 1.0]}}}
        dir/prior/          DiffusionPrior.save_pretrained: config.json + model.safetensors (its CLIP inside)
        dir/decoder/        Decoder.save_pretrained: config.json + model.safetensors (its CLIP inside)

    ``from_pretrained`` also reads the two older layouts: a ``config.json`` + ``model.safetensors`` folder of the
    first ``DALLE2.save_pretrained``, and ``dalle2 demo``'s ``clip/ prior/ decoder/`` (+ ``sampling.json``,
    mapped onto the defaults); a ``sampling.json`` beside either gives the defaults.  A training script writes a
    pipeline with ``DALLE2(prior=..., decoder=..., sampling=SamplingDefaults(...)).save_pretrained(dir)``.
    """

    @strict_keywords()
    @register_to_config(exclude=("sampling",))  # the sampling defaults are saved in pipeline.json
    def __init__(self, *, prior: DiffusionPrior, decoder: Decoder, prior_num_samples: int = 2,
                 sampling: Optional[Union[SamplingDefaults, Mapping[str, Any]]] = None) -> None:
        super().__init__()
        if not isinstance(prior, DiffusionPrior):
            raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}")
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a Decoder, got {type(decoder).__name__}")
        if decoder.unconditional:
            raise ValueError("decoder is unconditional (unconditional=True); DALLE2 needs one conditioned on "
                             "image embeddings")
        if prior.clip is None:
            raise ValueError("prior has no clip: DALLE2 embeds the text with the prior's CLIP; build the prior "
                             "with clip=")
        if isinstance(prior_num_samples, bool) or not isinstance(prior_num_samples, int) or prior_num_samples < 1:
            raise ValueError(f"prior_num_samples={prior_num_samples!r}: expected a positive int")
        self.prior = prior
        self.decoder = decoder
        self.prior_num_samples = prior_num_samples
        self.sampling_defaults = SamplingDefaults() if sampling is None else sampling

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """The settings a call leaves out (prior and decoder sampler, steps, guidance); saved in pipeline.json."""
        return self._sampling_defaults

    @sampling_defaults.setter
    def sampling_defaults(self, value: Union[SamplingDefaults, Mapping[str, Any]]) -> None:
        if isinstance(value, Mapping):
            value = SamplingDefaults.from_dict(value)
        if not isinstance(value, SamplingDefaults):
            raise TypeError(f"sampling defaults must be a SamplingDefaults or its dict form, got "
                            f"{type(value).__name__}")
        value.check_for(self.prior, self.decoder)
        self._sampling_defaults = value

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``prior/``, ``decoder/`` and ``pipeline.json`` (with the sampling defaults) into ``directory``.

        The pipeline file is written last, so a folder that has one holds both components.  Other files in
        ``directory`` are left alone (``pipeline.json`` wins over an older ``config.json`` or ``sampling.json``)."""
        directory = Path(directory)
        classes = {}
        for name in COMPONENTS:
            component = getattr(self, name)
            component.save_pretrained(directory / name)
            classes[name] = f"{type(component).__module__}:{type(component).__qualname__}"
        save_json(pipeline_file_contents(classes, self.prior_num_samples, self.sampling_defaults),
                  directory / PIPELINE_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu",
                        strict: bool = True) -> "DALLE2":
        """Load a pipeline saved by :meth:`save_pretrained`, or one of the older layouts (see the class docstring).

        A folder that is none of them raises a FileNotFoundError that lists the files each layout has."""
        root = Path(directory)
        layout = find_layout(root)
        if layout == "config":
            pipeline = super().from_pretrained(root, map_location=map_location, strict=strict)
        else:
            spec = read_pipeline_file(root) if layout == "pipeline" else {"components": {}, "prior_num_samples": 2}
            parts = {}
            for name, base in (("prior", DiffusionPrior), ("decoder", Decoder)):
                saved = spec["components"].get(name)
                part_cls = base if saved is None else resolve_class(saved)
                if not issubclass(part_cls, base):
                    raise TypeError(f"{root / PIPELINE_FILE}: component {name!r} is a {part_cls.__name__}, "
                                    f"expected a {base.__name__}")
                parts[name] = part_cls.from_pretrained(root / name, map_location=map_location, strict=strict)
            pipeline = cls(prior=parts["prior"], decoder=parts["decoder"],
                           prior_num_samples=spec["prior_num_samples"], sampling=spec.get("sampling"))
        if layout != "pipeline":
            legacy = read_legacy_sampling(root)
            if legacy is not None:  # older readers set guidance to 1 where the model could not guide
                pipeline.sampling_defaults = legacy.without_unusable_guidance(pipeline.prior, pipeline.decoder)
        return pipeline.to(map_location)

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    def _tokens(self, text: TextInput, clip: Any) -> torch.Tensor:
        if isinstance(text, torch.Tensor):
            if text.is_floating_point() or text.ndim != 2:
                raise ValueError(f"text as a tensor must hold token ids of shape (batch, length), got "
                                 f"{text.dtype} {tuple(text.shape)}")
            return text.to(self.device)
        return tokenize_for(clip, text, self.device)

    @torch.no_grad()
    def forward(self, text: TextInput, cond_scale: Any = None, prior_cond_scale: Optional[float] = None,
                return_pil_images: bool = False, *, sampler: Any = None, steps: Any = None,
                prior_sampler: Optional[str] = None, prior_steps: Optional[int] = None,
                generator: Union[torch.Generator, RowGenerators, None] = None, seed: Optional[int] = None,
                callback: Optional[Callable[[dict], None]] = None):
        """Images for ``text`` (a string, a list of strings, or token ids of shape (b, n)).

        Returns a (b, c, h, w) tensor in [0, 1] (for a single string, the (c, h, w) image), or PIL
        images with ``return_pil_images``.  ``cond_scale``/``sampler``/``steps`` go to the decoder
        (one value or one per unet), ``prior_cond_scale``/``prior_sampler``/``prior_steps`` to the
        prior; each one left as None comes from ``self.sampling_defaults``.  ``seed`` (or ``generator``)
        makes the result reproducible; a ``RowGenerators`` gives each text its own generator, so its images
        do not depend on the other texts of the batch.  ``callback`` receives every decoder step
        (``{'unet_number', 'i', 'total', ...}``), for progress bars.
        """
        settings = self.sampling_defaults.resolve(cond_scale=cond_scale, prior_cond_scale=prior_cond_scale,
                                                  sampler=sampler, steps=steps, prior_sampler=prior_sampler,
                                                  prior_steps=prior_steps)
        single = isinstance(text, str)
        if single:
            text = [text]
        if not isinstance(text, torch.Tensor):
            text = list(text)
            if not text or not all(isinstance(t, str) for t in text):
                raise TypeError("text must be a string, a non-empty list of strings or a tensor of token ids")
        if seed is not None:
            if generator is not None:
                raise ValueError("pass seed= or generator=, not both")
            generator = torch.Generator(device=self.device).manual_seed(check_seed("seed", seed))

        was_training = self.training
        self.eval()
        try:
            prior_tokens = self._tokens(text, self.prior.clip)
            image_embed = self.prior.sample(prior_tokens, num_samples_per_batch=self.prior_num_samples,
                                            cond_scale=settings["prior_cond_scale"],
                                            timesteps=settings["prior_steps"], sampler=settings["prior_sampler"],
                                            generator=generator)
            decoder_text = self._tokens(text, self.decoder.clip) if self.decoder.condition_on_text_encodings else None
            images = self.decoder.sample(image_embed=image_embed, text=decoder_text,
                                         cond_scale=settings["cond_scale"], sampler=settings["sampler"],
                                         steps=settings["steps"], generator=generator, callback=callback)
        finally:
            self.train(was_training)
        if not self.decoder.auto_normalize_img:
            images = (images + 1) * 0.5
        images = images.clamp(0, 1)
        if return_pil_images:
            pil = to_pil_images(images)
            return pil[0] if single else pil
        return images[0] if single else images

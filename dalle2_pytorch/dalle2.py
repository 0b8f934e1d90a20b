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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from dalle2_pytorch.clip.conditioning import clip_image_embed, clip_text_condition
from dalle2_pytorch.diffusion.noise import RowGenerators
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.hub import loading_checkpoint, resolve_pretrained
from dalle2_pytorch.images import to_pil_images
from dalle2_pytorch.manipulations import ManipulationsMixin
from dalle2_pytorch.prior.conditioning import most_similar_candidates
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.pipeline_files import (COMPONENTS, PIPELINE_FILE, SamplingDefaults, find_layout,
                                           is_diffusers_unclip, pipeline_file_contents, read_legacy_sampling,
                                           read_pipeline_file)
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config, resolve_class, save_json
from dalle2_pytorch.validation import check_seed, strict_keywords

if TYPE_CHECKING:
    from dalle2_pytorch.karlo import KarloPipeline

TextInput = Union[str, Sequence[str], torch.Tensor]


def tokenize_for(clip: Any, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP BPE tokens of ``texts``, cut to the CLIP's text length."""
    from dalle2_pytorch.clip.tokenizer import tokenize

    length = int(getattr(clip, "max_text_len", 77)) if clip is not None else 77
    return tokenize(list(texts), context_length=length, truncate=True).to(device)


BUILD_KEYWORDS = ("dim", "image_size", "text_seq_len", "depth", "heads", "text_encoder_name", "text_encoder_depth",
                  "text_decoder_depth", "timesteps")


def _build_from_sizes(sizes: dict[str, Any]) -> tuple[DiffusionPrior, Decoder]:
    """The all-in-one constructor's prior and decoder (see :func:`dalle2_pytorch.recipes.build_unclip`)."""
    from dalle2_pytorch.recipes import build_unclip

    missing = [name for name in ("dim", "image_size") if name not in sizes]
    if missing:
        raise TypeError(f"DALLE2 needs prior= and decoder=, or at least dim= and image_size= to build a new "
                        f"CLIP + prior + decoder (missing {', '.join(missing)})")
    return build_unclip(**sizes)


class DALLE2(ManipulationsMixin, PretrainedMixin, nn.Module):
    """The unCLIP pipeline: a trained :class:`DiffusionPrior` and :class:`Decoder` turned into text-to-image.

    Args:
        prior: the diffusion prior (text -> CLIP image embedding); it needs a CLIP to embed text.
        decoder: the decoder (image embedding [+ text] -> image); must not be unconditional.
        prior_num_samples: candidate image embeddings per text; the one most similar to the text wins.
        decoder_num_samples: images the decoder draws per text (default 1).  With ``return_best`` (default) the
            one whose CLIP image embedding (by the prior's CLIP) is most similar to the text's embedding is
            returned; with ``return_best=False`` all of them, as (b, decoder_num_samples, c, h, w).
        sampling: the default sampling settings (a :class:`SamplingDefaults`, or its JSON form
            ``{"prior": {...}, "decoder": {...}}``); also settable later as ``dalle2.sampling_defaults``.
        dim, image_size, text_seq_len, depth, heads, text_encoder_name, text_encoder_depth, text_decoder_depth,
            timesteps: instead of ``prior`` and ``decoder``, build a new untrained CLIP + prior + decoder from these
            sizes (all-in-one, for newcomers; see :func:`dalle2_pytorch.recipes.build_unclip`, which documents
            each).  ``text_encoder_name`` conditions the decoder on a Hugging Face text encoder such as T5.

    Saved layout (``save_pretrained(dir)``; ``from_pretrained(dir)`` is the one loader of a pipeline)::

        dir/pipeline.json   {"class": "dalle2_pytorch.dalle2:DALLE2", "format_version": 1, "library_version",
                             "components": {"prior": "<module>:DiffusionPrior", "decoder": "<module>:Decoder"},
                             "prior_num_samples": 2,
                             "sampling": {"prior":   {"sampler": "ddim", "steps": 16, "cond_scale": 1.0},
                                          "decoder": {"sampler": "dpmpp_2m", "steps": [20, 10],
                                                      "cond_scale": [3.0, 1.0]}}}
        dir/prior/          DiffusionPrior.save_pretrained: config.json + model.safetensors (its CLIP inside)
        dir/decoder/        Decoder.save_pretrained: config.json + model.safetensors (its CLIP inside)

    Image manipulations (``embed_image``, ``invert``, ``variations``, ``interpolate``, ``text_diff``, ``inpaint``,
    ``outpaint``) come from :class:`~dalle2_pytorch.manipulations.ManipulationsMixin` (docs/manipulations.md).

    ``from_pretrained`` also reads the two older layouts: a ``config.json`` + ``model.safetensors`` folder of the
    first ``DALLE2.save_pretrained``, and ``dalle2 demo``'s ``clip/ prior/ decoder/`` (+ ``sampling.json``,
    mapped onto the defaults); a ``sampling.json`` beside either gives the defaults.  A training script writes a
    pipeline with ``DALLE2(prior=..., decoder=..., sampling=SamplingDefaults(...)).save_pretrained(dir)``.
    """

    # the sampling defaults are saved in pipeline.json; the sizes are recorded as the prior and decoder they built
    @strict_keywords()
    @register_to_config(exclude=("sampling", *BUILD_KEYWORDS))
    def __init__(self, *, prior: Optional[DiffusionPrior] = None, decoder: Optional[Decoder] = None,
                 prior_num_samples: int = 2, decoder_num_samples: int = 1, return_best: bool = True,
                 sampling: Optional[Union[SamplingDefaults, Mapping[str, Any]]] = None, dim: Optional[int] = None,
                 image_size: Optional[int] = None, text_seq_len: Optional[int] = None, depth: Optional[int] = None,
                 heads: Optional[int] = None, text_encoder_name: Optional[str] = None,
                 text_encoder_depth: Optional[int] = None, text_decoder_depth: Optional[int] = None,
                 timesteps: Optional[int] = None) -> None:
        super().__init__()
        sizes = {name: value for name, value in zip(BUILD_KEYWORDS, (
            dim, image_size, text_seq_len, depth, heads, text_encoder_name, text_encoder_depth, text_decoder_depth,
            timesteps)) if value is not None}
        if prior is None and decoder is None:
            prior, decoder = _build_from_sizes(sizes)
            self.override_config(prior=prior, decoder=decoder)
        elif sizes:
            raise TypeError(f"give prior= and decoder=, or sizes to build them from ({', '.join(sorted(sizes))}), "
                            "not both")
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
        if isinstance(decoder_num_samples, bool) or not isinstance(decoder_num_samples, int) or decoder_num_samples < 1:
            raise ValueError(f"decoder_num_samples={decoder_num_samples!r}: expected a positive int")
        if not isinstance(return_best, bool):
            raise TypeError(f"return_best={return_best!r}: expected True (the best of decoder_num_samples images per "
                            "text) or False (all of them)")
        self.prior = prior
        self.decoder = decoder
        self.prior_num_samples = prior_num_samples
        self.decoder_num_samples, self.return_best = decoder_num_samples, return_best
        self.sampling_defaults = SamplingDefaults() if sampling is None else sampling

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """The settings a call leaves out (prior and decoder sampler, steps, guidance); saved in pipeline.json."""
        return self._sampling_defaults

    @sampling_defaults.setter
    def sampling_defaults(self, value: Union[SamplingDefaults, Mapping[str, Any]]) -> None:
        self._sampling_defaults = SamplingDefaults.for_models(value, self.prior, self.decoder)

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
        save_json(pipeline_file_contents(classes, self.prior_num_samples, self.sampling_defaults,
                                         decoder_num_samples=self.decoder_num_samples, return_best=self.return_best),
                  directory / PIPELINE_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu",
                        strict: bool = True, *, revision: Optional[str] = None,
                        allow_download: Optional[bool] = None) -> Union["DALLE2", "KarloPipeline"]:
        """Load a pipeline saved by :meth:`save_pretrained`, or one of the older layouts (see the class docstring),
        from a folder or a Hugging Face Hub id (``org/repo[@revision][/subfolder]``, see
        :func:`~dalle2_pytorch.hub.resolve_pretrained`).  The folder's own files never make it download anything
        unless ``allow_download`` (see :func:`~dalle2_pytorch.hub.loading_checkpoint`).

        A diffusers unCLIP folder (Karlo) gives a ``dalle2_pytorch.karlo.KarloPipeline`` with the same call
        signature (docs/karlo.md). A folder that is none of the layouts raises a FileNotFoundError that lists the
        files each layout has."""
        root = resolve_pretrained(directory, revision)
        if is_diffusers_unclip(root):
            from dalle2_pytorch.karlo import KarloPipeline

            return KarloPipeline.from_pretrained(root, map_location=map_location)
        with loading_checkpoint(allow_download):
            return cls._from_local_pipeline(root, map_location, strict)

    @classmethod
    def _from_local_pipeline(cls, root: Path, map_location: Union[str, torch.device], strict: bool) -> "DALLE2":
        layout = find_layout(root)
        if layout == "config":
            pipeline = super()._from_local_folder(root, map_location, strict)
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
                           prior_num_samples=spec["prior_num_samples"], sampling=spec.get("sampling"),
                           decoder_num_samples=spec.get("decoder_num_samples", 1),
                           return_best=spec.get("return_best", True))
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

    # ------------------------------------------------------------------ best of several decoder samples
    def _decoder_samples_per_text(self, images: torch.Tensor, prior_tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's ``decoder_num_samples`` consecutive images per text, reduced to the one most similar to
        the text in the prior's CLIP space (``return_best``, as the prior reranks its candidates) or grouped
        per text as (b, n, c, h, w)."""
        n = self.decoder_num_samples
        if not self.return_best:
            return images.view(-1, n, *images.shape[1:])
        if n == 1:
            return images
        text_embed = clip_text_condition(self.prior.clip, prior_tokens)[0]
        best = most_similar_candidates(clip_image_embed(self.prior.clip, images), text_embed, n)
        return images.view(-1, n, *images.shape[1:])[torch.arange(len(best), device=best.device), best]

    @torch.no_grad()
    def forward(self, text: TextInput, cond_scale: Any = None, prior_cond_scale: Optional[float] = None,
                return_pil_images: bool = False, *, sampler: Any = None, steps: Any = None,
                prior_sampler: Optional[str] = None, prior_steps: Optional[int] = None,
                generator: Union[torch.Generator, RowGenerators, None] = None, seed: Optional[int] = None,
                callback: Optional[Callable[[dict], None]] = None):
        """Images for ``text`` (a string, a list of strings, or token ids of shape (b, n)).

        Returns a (b, c, h, w) tensor in [0, 1] (for a single string, the (c, h, w) image), or PIL
        images with ``return_pil_images``; with ``return_best=False`` every text has ``decoder_num_samples``
        images: (b, n, c, h, w) (a single string: (n, c, h, w)), or one list of PIL images per text.  ``cond_scale``/``sampler``/``steps`` go to the decoder
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
            n = self.decoder_num_samples
            images = self.decoder.sample(image_embed=image_embed.repeat_interleave(n, dim=0),
                                         text=None if decoder_text is None else decoder_text.repeat_interleave(n, 0),
                                         cond_scale=settings["cond_scale"], sampler=settings["sampler"],
                                         steps=settings["steps"], generator=generator, callback=callback)
            if not self.decoder.auto_normalize_img:
                images = (images + 1) * 0.5
            images = self._decoder_samples_per_text(images.clamp(0, 1), prior_tokens)
        finally:
            self.train(was_training)
        if return_pil_images:
            pil = [to_pil_images(group) for group in images] if images.ndim == 5 else to_pil_images(images)
            return pil[0] if single else pil
        return images[0] if single else images

    def generate_images(self, text: TextInput, num: int = 1, **options: Any) -> list:
        """``num`` PIL images per text: a list of them for one string, one such list per text otherwise.

        ``options`` are the sampling keywords of :meth:`forward` (``cond_scale``, ``steps``, ``seed``, ...).
        With ``return_best=False`` every one of the ``num`` draws brings its ``decoder_num_samples`` images."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num={num!r}: expected a positive int (images per text)")
        if "return_pil_images" in options:
            raise TypeError("generate_images always returns PIL images; call the pipeline itself for tensors")
        single = isinstance(text, str)
        texts = text.repeat_interleave(num, dim=0) if isinstance(text, torch.Tensor) else \
            [t for t in ([text] if single else list(text)) for _ in range(num)]
        images = self.forward(texts, **options)
        per_text = images.reshape(-1, num * (images.shape[1] if images.ndim == 5 else 1), *images.shape[-3:])
        groups = [to_pil_images(group) for group in per_text]
        return groups[0] if single else groups

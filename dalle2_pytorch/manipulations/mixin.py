"""The manipulations as methods of the pipeline: :class:`ManipulationsMixin`, which ``DALLE2`` inherits.

Each method checks its inputs, picks the pipeline's defaults and calls :mod:`dalle2_pytorch.manipulations.core`.
It uses the pipeline's ``prior`` (its CLIP embeds images and texts, in the space the decoder is conditioned on),
``decoder``, ``sampling_defaults``, ``prior_num_samples`` and ``_tokens``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.noise import RowGenerators
from dalle2_pytorch.manipulations import core

DEFAULT_INVERSION_STEPS = 50
TextArg = Union[str, Sequence[str], None]
Callback = Optional[Callable[[dict], None]]


class ManipulationsMixin:
    """unCLIP's image manipulations (paper Section 3) on a pipeline with ``prior`` and ``decoder``.

    Images are float tensors (b, 3, h, w) or (3, h, w) in [0, 1] at the decoder's output size; every method
    returns (n, 3, h, w) in [0, 1].  ``seed`` makes a call reproducible; ``callback`` gets every decoder step
    (``{'unet_number', 'i', 'total', ...}``), for progress bars."""

    # ------------------------------------------------------------------ helpers
    def _images(self, images: Any, name: str = "images") -> Tensor:
        return core.check_images(images, self.decoder, name).to(self.device).float()

    def _inversion_steps(self, steps: Optional[int]) -> int:
        return min(DEFAULT_INVERSION_STEPS, self.decoder.stage(1).schedule.num_timesteps) if steps is None else steps

    def _decoder_settings(self, first_sampler: Optional[str] = None, first_steps: Optional[int] = None,
                          **given: Any) -> dict[str, list]:
        """Per-unet sampler, steps and guidance: the defaults, overridden by ``given`` and for unet 1 by ``first_*``."""
        settings = self.sampling_defaults.resolve(**given)
        n = self.decoder.num_unets
        out = {name: core._per_unet(settings[name], n) for name in ("sampler", "steps", "cond_scale")}
        if first_sampler is not None:
            out["sampler"][0] = first_sampler
        if first_steps is not None:
            out["steps"][0] = first_steps
        return out

    def _decoder_text(self, texts: TextArg, batch: int) -> dict[str, Tensor]:
        """``text_encodings`` for a text-conditioned decoder: of ``texts`` (one string for every row, or one per row),
        else of empty captions (the embedding alone says what the image shows); ``{}`` for other decoders."""
        if not self.decoder.condition_on_text_encodings:
            return {}
        texts = [""] * batch if texts is None else [texts] * batch if isinstance(texts, str) else list(texts)
        return {"text_encodings": self.decoder.conditions.embed_text(self._tokens(texts, self.decoder.clip))}

    def _text_embeds(self, texts: Sequence[str]) -> Tensor:
        return self.prior.clip.embed_text(self._tokens(list(texts), self.prior.clip))[0].float()

    def _prior_embeds(self, text: TextArg, batch: int, generator: Any) -> Tensor:
        """Image embeddings drawn by the prior for ``text`` (one string for the whole batch, or one per image)."""
        texts = [text] * batch if isinstance(text, str) else list(text)
        if len(texts) != batch or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"text must be a string or {batch} strings (one per image), got {text!r}")
        settings = self.sampling_defaults.resolve()
        return self.prior.sample(self._tokens(texts, self.prior.clip), num_samples_per_batch=self.prior_num_samples,
                                 cond_scale=settings["prior_cond_scale"], timesteps=settings["prior_steps"],
                                 sampler=settings["prior_sampler"], generator=generator)

    @staticmethod
    def _generator(seed: Optional[int], rows: Optional[int] = None) -> Any:
        """A generator for ``seed``; with ``rows``, the same seed for every row (rows then share their noise)."""
        if seed is None:
            return None
        return torch.Generator().manual_seed(int(seed)) if rows is None else RowGenerators.from_seeds([seed] * rows)

    # ------------------------------------------------------------------ embeddings and inversion
    @torch.no_grad()
    def embed_image(self, images: Tensor) -> Tensor:
        """CLIP image embeddings (b, d) of ``images`` with the pipeline's CLIP (the prior's)."""
        return self.prior.clip.embed_image(self._images(images))[0].float()

    @torch.no_grad()
    def invert(self, images: Tensor, steps: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """``(image_embed, noise)``: the CLIP embedding and unet 1's DDIM-inverted noise (``steps``, default 50).

        ``reconstruct(image_embed, noise, steps=steps)`` gives the images back (closely; see docs/manipulations.md)."""
        images = self._images(images)
        steps = self._inversion_steps(steps)
        embed = self.embed_image(images)
        scale = self._decoder_settings()["cond_scale"][0]
        return embed, core.invert(self.decoder, images, embed, steps=steps, cond_scale=scale,
                                  **self._decoder_text(None, images.shape[0]))

    @torch.no_grad()
    def reconstruct(self, image_embed: Tensor, noise: Tensor, *, steps: Optional[int] = None,
                    seed: int = 0, callback: Callback = None) -> Tensor:
        """Deterministic DDIM decoding of ``(image_embed, noise)`` from :meth:`invert` (same ``steps``);
        the upsamplers use the pipeline's defaults with noise from ``seed`` (the same for every row)."""
        settings = self._decoder_settings("ddim", self._inversion_steps(steps))
        return core.decode(self.decoder, image_embed.to(self.device), noise=noise.to(self.device), eta=0.0,
                           generator=self._generator(seed, image_embed.shape[0]), callback=callback, **settings,
                           **self._decoder_text(None, image_embed.shape[0]))

    # ------------------------------------------------------------------ variations, interpolation, text diffs
    @torch.no_grad()
    def variations(self, images: Tensor, num: int = 4, eta: float = 1.0, seed: Optional[int] = None, *,
                   steps: Optional[int] = None, inverted: bool = False, callback: Callback = None) -> Tensor:
        """``num`` variations of each image (paper 3.1): its CLIP embedding kept, unet 1 sampled with DDIM at
        ``eta`` > 0 from fresh noise (or, ``inverted=True``, from the image's inverted noise).  Image-major order."""
        images = self._images(images)
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num={num!r}: expected a positive int (variations per image)")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta={eta!r}: expected a number in [0, 1] (DDIM's η; > 0 for varied samples)")
        steps = self._inversion_steps(steps)
        embed = self.embed_image(images)
        settings = self._decoder_settings("ddim", steps)
        noise = None
        if inverted:
            noise = core.invert(self.decoder, images, embed, steps=steps, cond_scale=settings["cond_scale"][0],
                                **self._decoder_text(None, images.shape[0]))
            noise = noise.repeat_interleave(num, dim=0)
        return core.decode(self.decoder, embed.repeat_interleave(num, dim=0), noise=noise, eta=float(eta),
                           generator=self._generator(seed), callback=callback, **settings,
                           **self._decoder_text(None, embed.shape[0] * num))

    @torch.no_grad()
    def interpolate(self, image_a: Tensor, image_b: Tensor, num: int = 5, *, steps: Optional[int] = None,
                    seed: int = 0, callback: Callback = None) -> Tensor:
        """``num`` images from ``image_a`` to ``image_b`` (paper 3.2): slerp of the CLIP embeddings and of the
        DDIM-inverted noises; the ends are :meth:`reconstruct` of each image (same ``steps`` and ``seed``)."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 2:
            raise ValueError(f"num={num!r}: expected an int >= 2 (the two ends included)")
        (embed_a, noise_a), (embed_b, noise_b) = (self.invert(self._images(x, name)[:1], steps)
                                                  for x, name in ((image_a, "image_a"), (image_b, "image_b")))
        t = torch.linspace(0, 1, num, device=self.device)
        embeds = core.slerp(embed_a.expand(num, -1), embed_b.expand(num, -1), t)
        return self.reconstruct(embeds, core.slerp_noise(noise_a, noise_b, t), steps=steps, seed=seed,
                                callback=callback)

    @torch.no_grad()
    def text_diff(self, image: Tensor, from_text: str, to_text: str, amounts: Sequence[float] = (0.25, 0.5, 0.75),
                  *, steps: Optional[int] = None, seed: int = 0, callback: Callback = None) -> Tensor:
        """Edit images with a text diff (paper 3.3): rotate each CLIP image embedding towards
        normalize(z(to_text) − z(from_text)) by slerp, θ in ``amounts``, keeping the inverted noise."""
        if not isinstance(from_text, str) or not isinstance(to_text, str) or not from_text or not to_text:
            raise TypeError("from_text and to_text must be non-empty strings (the caption now, the caption wanted)")
        amounts = core.check_amounts(amounts)
        embed, noise = self.invert(image, steps)
        z_from, z_to = self._text_embeds([from_text, to_text]).chunk(2)
        embeds = core.text_diff_embeds(embed, z_from, z_to, amounts)
        return self.reconstruct(embeds, noise.repeat_interleave(len(amounts), dim=0), steps=steps, seed=seed,
                                callback=callback)

    # ------------------------------------------------------------------ inpainting and outpainting
    @torch.no_grad()
    def inpaint(self, image: Tensor, mask: Tensor, text: TextArg = None, sampler: Optional[str] = None,
                steps: Optional[int] = None, *, resample_times: Optional[int] = None, seed: Optional[int] = None,
                cond_scale: Any = None, callback: Callback = None) -> Tensor:
        """Regenerate ``image`` where ``mask`` is False (True = keep, kept pixels bit-exact) with any sampler.

        Conditioned on ``text`` through the prior, else on the image's own CLIP embedding.  ``sampler``/``steps``
        default to the pipeline's; ``resample_times`` > 1 adds RePaint's resampling."""
        image = self._images(image, "image")
        mask = core.check_mask(mask, image).to(self.device)
        generator = self._generator(seed)
        embed = self.embed_image(image) if text is None else self._prior_embeds(text, image.shape[0], generator)
        settings = self._decoder_settings(sampler=sampler, steps=steps, cond_scale=cond_scale)
        return core.decode(self.decoder, embed, inpaint=(image, mask), resample_times=resample_times,
                           generator=generator, callback=callback, **settings,
                           **self._decoder_text(text, image.shape[0]))

    @torch.no_grad()
    def outpaint(self, image: Tensor, pad: Optional[Sequence[int]] = None, scale: Optional[float] = None,
                 text: TextArg = None, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                 seed: Optional[int] = None, callback: Callback = None) -> Tensor:
        """Extend ``image`` onto a larger canvas, ``pad=(left, top, right, bottom)`` pixels or ``scale`` (e.g. 2),
        the source kept bit-exact.  Every unet draws the larger canvas at its own resolution (its sides must be
        multiples of the unet's; see the error).  Conditioned on ``text`` or on the image's embedding."""
        image = self._images(image, "image")
        canvas, mask, _ = core.outpaint_canvas(image, pad=pad, scale=scale)
        generator = self._generator(seed)
        embed = self.embed_image(image) if text is None else self._prior_embeds(text, image.shape[0], generator)
        settings = self._decoder_settings(sampler=sampler, steps=steps)
        return core.decode(self.decoder, embed, inpaint=(canvas, mask), canvas=tuple(canvas.shape[-2:]),
                           generator=generator, callback=callback, **settings,
                           **self._decoder_text(text, image.shape[0]))

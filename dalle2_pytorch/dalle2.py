"""DALLE2: text -> CLIP tokens -> prior (image embedding) -> decoder cascade -> images.

    dalle2 = DALLE2(prior=diffusion_prior, decoder=decoder)
    images = dalle2(['a butterfly trying to escape a tornado'], cond_scale=2.)   # (1, 3, H, W) in [0, 1]

Strings are tokenised with the CLIP BPE tokenizer (start/end tokens included, cut to the CLIP's text
length); token-id tensors are used as given.  The prior draws ``prior_num_samples`` candidate image
embeddings per text and keeps the one closest to the text embedding; the decoder turns it into
images.  Pass ``seed=`` (or your own ``generator=``) for reproducible images.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
from torch import nn

from dalle2_pytorch.diffusion.noise import RowGenerators
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.serialization import PretrainedMixin

TextInput = Union[str, Sequence[str], torch.Tensor]


def tokenize_for(clip: Any, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP BPE tokens of ``texts``, cut to the CLIP's text length."""
    from dalle2_pytorch.clip.tokenizer import tokenize

    length = int(getattr(clip, "max_text_len", 77)) if clip is not None else 77
    return tokenize(list(texts), context_length=length, truncate=True).to(device)


def to_pil_images(images: torch.Tensor) -> list:
    """(b, c, h, w) tensors in [0, 1] as a list of ``PIL.Image``."""
    from PIL import Image

    array = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


class DALLE2(PretrainedMixin, nn.Module):
    """The unCLIP pipeline: a trained :class:`DiffusionPrior` and :class:`Decoder` turned into text-to-image.

    Args:
        prior: the diffusion prior (text -> CLIP image embedding); it needs a CLIP to embed text.
        decoder: the decoder (image embedding [+ text] -> image); must not be unconditional.
        prior_num_samples: candidate image embeddings per text; the one most similar to the text wins.
    """

    def __init__(self, *, prior: DiffusionPrior, decoder: Decoder, prior_num_samples: int = 2) -> None:
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
        self._register_config(prior=prior, decoder=decoder, prior_num_samples=prior_num_samples)
        self.prior = prior
        self.decoder = decoder
        self.prior_num_samples = prior_num_samples

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
    def forward(self, text: TextInput, cond_scale: Any = 1.0, prior_cond_scale: float = 1.0,
                return_pil_images: bool = False, *, sampler: Any = None, steps: Any = None,
                prior_sampler: str | None = None, prior_steps: int | None = None,
                generator: torch.Generator | RowGenerators | None = None, seed: int | None = None,
                callback: Callable[[dict], None] | None = None):
        """Images for ``text`` (a string, a list of strings, or token ids of shape (b, n)).

        Returns a (b, c, h, w) tensor in [0, 1] (for a single string, the (c, h, w) image), or PIL
        images with ``return_pil_images``.  ``cond_scale``/``sampler``/``steps`` go to the decoder
        (one value or one per unet), ``prior_cond_scale``/``prior_sampler``/``prior_steps`` to the
        prior.  ``seed`` (or ``generator``) makes the result reproducible; a ``RowGenerators`` gives each
        text its own generator, so its images do not depend on the other texts of the batch.
        ``callback`` receives every decoder step (``{'unet_number', 'i', 'total', ...}``), for progress bars.
        """
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
            generator = torch.Generator(device=self.device).manual_seed(int(seed))

        was_training = self.training
        self.eval()
        try:
            prior_tokens = self._tokens(text, self.prior.clip)
            image_embed = self.prior.sample(prior_tokens, num_samples_per_batch=self.prior_num_samples,
                                            cond_scale=prior_cond_scale, timesteps=prior_steps,
                                            sampler=prior_sampler, generator=generator)
            decoder_text = self._tokens(text, self.decoder.clip) if self.decoder.condition_on_text_encodings else None
            images = self.decoder.sample(image_embed=image_embed, text=decoder_text, cond_scale=cond_scale,
                                         sampler=sampler, steps=steps, generator=generator, callback=callback)
        finally:
            self.train(was_training)
        if not self.decoder.auto_normalize_img:
            images = (images + 1) * 0.5
        images = images.clamp(0, 1)
        if return_pil_images:
            pil = to_pil_images(images)
            return pil[0] if single else pil
        return images[0] if single else images

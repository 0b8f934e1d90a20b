"""Fitting user-built unets and VAEs into their place in the cascade.

A unet's role decides some of its constructor flags: upsamplers take a low-resolution image
(``lowres_cond``) and maybe its noise level (``lowres_noise_cond``), unet 1 of a conditional decoder
takes the CLIP image embedding, a unet with a VAE has the VAE's latent channels, and a unet with
learned variance outputs twice its channels.  :func:`configure_unet` asks the Unet for a copy with
those flags (``Unet.with_flags``), which keeps every weight that still fits and refuses to drop
trained weights silently.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from dalle2_pytorch.decoder.cascade_config import StageSettings
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE


def is_latent_vae(vae: Optional[nn.Module]) -> bool:
    """True for a real autoencoder (latent diffusion), False for None / the identity ``NullVQGanVAE``."""
    return vae is not None and not isinstance(vae, NullVQGanVAE)


def frozen_encoder(vae: nn.Module) -> Callable[[Tensor], Tensor]:
    """The VAE's encoder without gradients, on images clipped to the VAE's [-1, 1] range."""

    def encode(image: Tensor) -> Tensor:
        with torch.no_grad():
            return vae.encode(image.clamp(-1.0, 1.0))

    return encode


def resolve_vaes(vae: Any, num_unets: int, channels: int, image_sizes: Sequence[int]) -> list[nn.Module]:
    """One VAE per unet: the given ones for the first unets, ``NullVQGanVAE`` for the rest."""
    vaes = list(vae) if isinstance(vae, (tuple, list, nn.ModuleList)) else ([] if vae is None else [vae])
    if len(vaes) > num_unets:
        raise ValueError(f"vae has {len(vaes)} entries but the decoder has only {num_unets} unets")
    vaes += [None] * (num_unets - len(vaes))
    out: list[nn.Module] = []
    for number, (one, size) in enumerate(zip(vaes, image_sizes), start=1):
        if not is_latent_vae(one):
            if one is not None and one.channels != channels:
                raise ValueError(f"vae {number} is a NullVQGanVAE with channels={one.channels}; "
                                 f"the decoder has channels={channels}")
            out.append(NullVQGanVAE(channels))
            continue
        for attr in ("encode", "decode", "encoded_dim", "channels", "downsample_factor"):
            if not hasattr(one, attr):
                raise TypeError(f"vae {number} ({type(one).__name__}) lacks {attr!r}; pass a VQGanVAE or None")
        if one.channels != channels:
            raise ValueError(f"vae {number} takes {one.channels}-channel images but the decoder has "
                             f"channels={channels}")
        if size % one.downsample_factor:
            raise ValueError(f"image size {size} of unet {number} is not divisible by its VAE's downsample factor "
                             f"{one.downsample_factor} (2**layers)")
        out.append(one)
    return out


def configure_unet(unet: nn.Module, *, stage: StageSettings, vae: nn.Module, channels: int, unconditional: bool,
                   condition_on_text_encodings: Optional[bool]) -> Unet:
    """``unet`` with the flags of its place in the cascade (itself when they already match)."""
    number = stage.number
    if not isinstance(unet, Unet):
        raise TypeError(f"unet {number} must be a dalle2_pytorch Unet, got {type(unet).__name__}")
    is_first = number == 1
    if unconditional and (unet.cond_on_image_embeds or unet.cond_on_text_encodings):
        raise ValueError(f"unet {number} is built with cond_on_image_embeds={unet.cond_on_image_embeds}, "
                         f"cond_on_text_encodings={unet.cond_on_text_encodings}, but the decoder is unconditional; "
                         "build it without conditioning")
    if condition_on_text_encodings is False and unet.cond_on_text_encodings:
        raise ValueError(f"condition_on_text_encodings=False but unet {number} has cond_on_text_encodings=True")
    text = not unconditional and (unet.cond_on_text_encodings or (is_first and condition_on_text_encodings is True))
    if text and unet.text_embed_dim is None:
        raise ValueError(f"unet {number} must be conditioned on text encodings (condition_on_text_encodings=True) "
                         "but has no text_embed_dim; build it with text_embed_dim=<width of the text encodings>")
    image = not unconditional and (is_first or unet.cond_on_image_embeds)
    if image and unet.image_embed_dim is None:
        raise ValueError(f"unet {number} is conditioned on CLIP image embeddings but has no image_embed_dim; "
                         "build it with image_embed_dim=<CLIP dim_latent> (or use unconditional=True)")
    unet_channels = vae.encoded_dim if is_latent_vae(vae) else channels
    flags = dict(lowres_cond=not is_first, lowres_noise_cond=stage.use_noise_for_lowres_cond,
                 cond_on_image_embeds=image, cond_on_text_encodings=text, channels=unet_channels,
                 channels_out=unet_channels * (2 if stage.learned_variance else 1))
    return unet.with_flags(**flags)

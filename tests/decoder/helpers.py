"""Tiny decoder pieces shared by the decoder tests."""

import torch

from dalle2_pytorch.decoder import Decoder, Unet

EMBED_DIM = 8
TEXT_DIM = 8


def tiny_unet(**kwargs) -> Unet:
    base = dict(dim=8, cond_dim=8, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=1, attn_dim_head=8)
    base.update(kwargs)
    return Unet(**base)


def tiny_decoder(num_unets: int = 1, *, text: bool = False, **kwargs) -> Decoder:
    """A decoder of ``num_unets`` tiny unets at sizes 8, 16, ... with 100 timesteps."""
    unets = [tiny_unet(image_embed_dim=EMBED_DIM, text_embed_dim=TEXT_DIM if text else None,
                       cond_on_text_encodings=text and i == 0) for i in range(num_unets)]
    sizes = tuple(8 * 2 ** i for i in range(num_unets))
    base = dict(image_sizes=sizes, timesteps=100)
    base.update(kwargs)
    return Decoder(unet=tuple(unets), **base)


def images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def embeds(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, EMBED_DIM, generator=torch.Generator().manual_seed(seed))


def text_encodings(batch: int = 2, length: int = 5, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, length, TEXT_DIM, generator=torch.Generator().manual_seed(seed))

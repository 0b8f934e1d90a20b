"""The tiny models of the test suite, each defined once.

Every factory takes keyword overrides of the model's constructor, so a test states only what it changes. The sizes
are the smallest that exercise every code path (two resolution levels, one attention head, a few timesteps), so a
forward pass takes milliseconds on one CPU thread.
"""

from __future__ import annotations

import torch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.vae import VQGanVAE

EMBED_DIM = 8      # CLIP image/text embedding width of the tiny priors and decoders
TEXT_DIM = 8       # width of the text encodings a text-conditioned tiny unet reads


def tiny_unet(**kwargs) -> Unet:
    """Two levels (dim 8, 16), one resnet block, one attention head; no conditioning unless asked."""
    base = dict(dim=8, cond_dim=8, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=1, attn_dim_head=8)
    return Unet(**{**base, **kwargs})


def tiny_decoder(num_unets: int = 1, *, text: bool = False, seed: int = 0, **kwargs) -> Decoder:
    """``num_unets`` tiny image-embedding-conditioned unets at 8, 16, ... pixels (100 timesteps unless overridden);
    ``text=True`` makes unet 1 cross-attend to text encodings of width TEXT_DIM."""
    torch.manual_seed(seed)
    unets = tuple(tiny_unet(image_embed_dim=EMBED_DIM, text_embed_dim=TEXT_DIM if text else None,
                            cond_on_text_encodings=text and i == 0) for i in range(num_unets))
    base = dict(image_sizes=tuple(8 * 2 ** i for i in range(num_unets)), timesteps=100)
    return Decoder(unet=unets, **{**base, **kwargs})


def tiny_prior_network(dim: int = EMBED_DIM, **kwargs) -> DiffusionPriorNetwork:
    """A one-layer, one-head prior network over ``dim``-wide embeddings."""
    base = dict(depth=1, dim_head=8, heads=1)
    return DiffusionPriorNetwork(dim, **{**base, **kwargs})


def tiny_prior(seed: int = 0, *, dim: int = EMBED_DIM, net_options: dict | None = None, **kwargs) -> DiffusionPrior:
    """A tiny prior over ``dim``-wide embeddings, 20 timesteps, not text-encoding conditioned; ``net_options``
    override the network's keywords, the rest the prior's."""
    torch.manual_seed(seed)
    net = tiny_prior_network(dim, **(net_options or {}))
    base = dict(image_embed_dim=dim, timesteps=20, cond_drop_prob=0.2, condition_on_text_encodings=False)
    return DiffusionPrior(net, **{**base, **kwargs})


def tiny_vae(**kwargs) -> VQGanVAE:
    """A 16-pixel VQGAN with two layers and its discriminator, no perceptual loss (that downloads VGG)."""
    base = dict(dim=8, image_size=16, layers=2, vq_codebook_dim=8, vq_codebook_size=16, attn_heads=2,
                attn_dim_head=8, discr_layers=2, perceptual=None)
    return VQGanVAE(**{**base, **kwargs})


def tiny_clip(seed: int = 0, **kwargs) -> CLIP:
    """A one-layer CLIP on 16-pixel images (4-pixel patches), 100 text tokens, latent width 16."""
    torch.manual_seed(seed)
    base = dict(dim_text=32, dim_image=24, dim_latent=16, num_text_tokens=100, text_enc_depth=1, text_seq_len=8,
                text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8,
                visual_image_size=16, visual_patch_size=4)
    return CLIP(**{**base, **kwargs})

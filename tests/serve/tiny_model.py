"""A tiny real DALLE2 (CLIP + diffusion prior + two-unet decoder), saved once per test session."""

from __future__ import annotations

from pathlib import Path

import torch

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork

TEXT_LEN = 8
LATENT = 16


def tiny_dalle2(seed: int = 0) -> DALLE2:
    """Random weights: images are noise-like, but every code path of a real pipeline runs."""
    torch.manual_seed(seed)
    clip = CLIP(dim_text=16, dim_image=16, dim_latent=LATENT, num_text_tokens=VOCAB_SIZE, text_enc_depth=1,
                text_seq_len=TEXT_LEN, text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2,
                visual_dim_head=8, visual_image_size=16, visual_patch_size=8, visual_patch_dropout=0.0)
    adapter = BuiltinClipAdapter(clip)
    net = DiffusionPriorNetwork(LATENT, depth=1, dim_head=8, heads=2, max_text_len=TEXT_LEN)
    prior = DiffusionPrior(net, clip=adapter, timesteps=50, sample_timesteps=4, cond_drop_prob=0.2,
                           condition_on_text_encodings=False)
    unets = [Unet(dim=8, image_embed_dim=LATENT, cond_dim=8, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=1,
                  attn_dim_head=8) for _ in range(2)]
    decoder = Decoder(unet=tuple(unets), clip=adapter, image_sizes=(8, 16), timesteps=50,
                      image_cond_drop_prob=0.1, text_cond_drop_prob=0.0)
    return DALLE2(prior=prior, decoder=decoder).eval()


def save_tiny_checkpoint(directory: Path) -> Path:
    tiny_dalle2().save_pretrained(directory)
    return directory

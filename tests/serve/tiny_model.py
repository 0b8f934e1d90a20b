"""A tiny real DALLE2 (CLIP + diffusion prior + two-unet decoder), and writers of the older pipeline layouts exactly
as the code before pipeline.json wrote them (so the tests of DALLE2.from_pretrained, the CLI, serve and eval can
check that those folders still load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.serialization import PretrainedMixin, save_json

TEXT_LEN = 8
LATENT = 16


def tiny_dalle2(seed: int = 0) -> DALLE2:
    """Random weights: images are noise-like, but every code path of a real pipeline runs, and each sampling
    setting (decoder and prior sampler, steps, guidance) changes the images."""
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
                      image_cond_drop_prob=0.1, text_cond_drop_prob=0.0, predict_v=True)
    with torch.no_grad():  # zero-initialised output layers would make every setting draw the same image
        for parameter in (*net.parameters(), *decoder.unets.parameters()):
            if not parameter.any():
                parameter.normal_(0.0, 0.02)
    return DALLE2(prior=prior, decoder=decoder).eval()


# quick settings for tests: a request takes a fraction of a second on one CPU thread
FAST_SAMPLING = {"prior": {"cond_scale": 1.0, "steps": 4, "sampler": "ddim"},
                 "decoder": {"cond_scale": [2.0, 1.0], "steps": [4, 4], "sampler": "ddim"}}


def save_tiny_checkpoint(directory: Path, sampling: Optional[dict] = None) -> Path:
    """A tiny pipeline with ``sampling`` (default FAST_SAMPLING) as its defaults, saved by DALLE2.save_pretrained."""
    pipeline = tiny_dalle2()
    pipeline.sampling_defaults = FAST_SAMPLING if sampling is None else sampling
    pipeline.save_pretrained(directory)
    return directory


def save_as_first_dalle2_layout(pipeline: DALLE2, directory: Path) -> Path:
    """What DALLE2.save_pretrained wrote before pipeline.json: the mixin's config.json + model.safetensors."""
    PretrainedMixin.save_pretrained(pipeline, directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((directory / "config.json").read_text())["class"] == "dalle2_pytorch.dalle2:DALLE2"
    return directory


def save_as_demo_layout(pipeline: DALLE2, directory: Path, sampling: Optional[dict]) -> Path:
    """What train/demo.py wrote before pipeline.json: clip/, prior/, decoder/ (each save_pretrained beside its
    demo_stage.json marker), then the sampling settings in sampling.json (skipped when ``sampling`` is None)."""
    for name, model in (("clip", pipeline.prior.clip.clip), ("prior", pipeline.prior), ("decoder", pipeline.decoder)):
        model.save_pretrained(directory / name)
        save_json({"fingerprint": f"{name}-fingerprint", "seconds": 1.0}, directory / name / "demo_stage.json")
    if sampling is not None:
        save_json(sampling, directory / "sampling.json")
    return directory

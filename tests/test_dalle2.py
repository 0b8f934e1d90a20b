"""The DALLE2 pipeline: a tiny CLIP + prior + decoder trained end to end with the trainers on solid colours.

Captions are colour names ("red", "green", ...) and images are 8x8 squares of that colour.  A tiny
CLIP is aligned contrastively for a few steps (so that its text and image embeddings tell the colours
apart), then the DiffusionPriorTrainer and DecoderTrainer train the prior and decoder.  The pipeline
must then draw, for each caption, an image whose colour is the caption's far more often than chance.
"""

from __future__ import annotations

import pytest
import torch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import tokenize
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data.toy import COLOURS
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer

NAMES = list(COLOURS)  # six well separated colours: chance is 1/6
PALETTE = torch.tensor([COLOURS[n] for n in NAMES], dtype=torch.float32) / 255
SIZE, TEXT_LEN, DIM = 8, 8, 16
SAMPLING = dict(prior_steps=16, prior_sampler="ddim", steps=15, sampler="dpmpp_2m", cond_scale=3.0)


def solid_images(indices: torch.Tensor) -> torch.Tensor:
    return PALETTE[indices][:, :, None, None].expand(len(indices), 3, SIZE, SIZE).contiguous()


def judged_colours(images: torch.Tensor) -> torch.Tensor:
    """Index of the palette colour nearest to each image's mean colour."""
    return torch.cdist(images.mean(dim=(2, 3)), PALETTE).argmin(dim=1)


def aligned_clip(steps: int = 100) -> CLIP:
    torch.manual_seed(0)
    clip = CLIP(dim_text=DIM, dim_image=DIM, dim_latent=DIM, num_text_tokens=49408, text_enc_depth=1,
                text_seq_len=TEXT_LEN, text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2,
                visual_dim_head=8, visual_image_size=SIZE, visual_patch_size=4)
    tokens, images = tokenize(NAMES, context_length=TEXT_LEN), solid_images(torch.arange(len(NAMES)))
    optimizer = torch.optim.Adam(clip.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = clip(tokens, images, return_loss=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return clip


@pytest.fixture(scope="module")
def trained():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clip = aligned_clip()
        net = DiffusionPriorNetwork(dim=DIM, depth=2, dim_head=16, heads=4)
        prior = DiffusionPrior(net, clip=clip, timesteps=100, cond_drop_prob=0.0, condition_on_text_encodings=False)
        unet = Unet(dim=16, dim_mults=(1, 2), image_embed_dim=DIM, cond_dim=16, num_resnet_blocks=1, attn_heads=2,
                    attn_dim_head=8)
        decoder = Decoder(unet=unet, clip=clip, image_size=SIZE, timesteps=100, beta_schedule="cosine",
                          predict_v=True, image_cond_drop_prob=0.2)
        prior_trainer = DiffusionPriorTrainer(prior, lr=3e-3, warmup_steps=30, cosine_decay_max_steps=300,
                                              ema_beta=0.9, ema_update_after_step=10, ema_update_every=1)
        decoder_trainer = DecoderTrainer(decoder, lr=2e-3, ema_beta=0.9, ema_update_after_step=10,
                                         ema_update_every=1)
        classes = torch.arange(len(NAMES))
        text_embed = prior.clip.embed_text(tokenize(NAMES, context_length=TEXT_LEN))[0]
        image_embed = prior.clip.embed_image(solid_images(classes))[0]
        data = torch.Generator().manual_seed(0)
        for step in range(300):
            idx = torch.randint(0, len(NAMES), (64,), generator=data)
            prior_trainer(text_embed=text_embed[idx], image_embed=image_embed[idx])
            prior_trainer.update()
            if step < 180:
                idx = idx[:16]
                decoder_trainer(solid_images(idx), image_embed=image_embed[idx], max_batch_size=8)
                decoder_trainer.update()
        yield DALLE2(prior=prior, decoder=decoder, prior_num_samples=2)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_generated_colours_follow_the_captions(trained):
    captions = NAMES * 4
    images = trained(captions, seed=0, **SAMPLING)
    assert images.shape == (len(captions), 3, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1
    accuracy = (judged_colours(images) == torch.arange(len(NAMES)).repeat(4)).float().mean().item()
    print(f"DALLE2 toy colour accuracy: {accuracy:.3f} (chance {1 / len(NAMES):.3f})")
    assert accuracy >= 0.7, f"colour accuracy {accuracy:.2f} (chance {1 / len(NAMES):.2f})"


@pytest.mark.slow
def test_seeded_generation_is_reproducible_and_outputs(trained, tmp_path):
    first = trained(["red", "blue"], seed=3, **SAMPLING)
    assert torch.equal(first, trained(["red", "blue"], seed=3, **SAMPLING))
    assert not torch.equal(first, trained(["red", "blue"], seed=4, **SAMPLING))
    single = trained("red", seed=3, **SAMPLING)
    assert single.shape == (3, SIZE, SIZE)
    pil = trained(["red", "blue"], seed=3, return_pil_images=True, **SAMPLING)
    assert len(pil) == 2 and pil[0].size == (SIZE, SIZE)
    tokens = tokenize(["red", "blue"], context_length=TEXT_LEN)
    assert torch.equal(trained(tokens, seed=3, **SAMPLING), first)

    trained.save_pretrained(tmp_path / "dalle2")
    reloaded = DALLE2.from_pretrained(tmp_path / "dalle2")
    assert torch.equal(reloaded(["red", "blue"], seed=3, **SAMPLING), first)
    trained.prior.save_pretrained(tmp_path / "prior")
    assert isinstance(DiffusionPrior.from_pretrained(tmp_path / "prior"), DiffusionPrior)


def test_bad_pipeline_arguments():
    clip = aligned_clip(steps=0)
    prior = DiffusionPrior(DiffusionPriorNetwork(dim=DIM, depth=1, dim_head=8, heads=1), clip=clip, timesteps=10,
                           condition_on_text_encodings=False)
    decoder = Decoder(unet=Unet(dim=8, dim_mults=(1,), image_embed_dim=DIM, cond_dim=8), clip=clip,
                      image_size=SIZE, timesteps=10, beta_schedule="cosine")
    with pytest.raises(ValueError, match="prior_num_samples"):
        DALLE2(prior=prior, decoder=decoder, prior_num_samples=0)
    with pytest.raises(TypeError, match="prior must be a DiffusionPrior"):
        DALLE2(prior=decoder, decoder=decoder)
    with pytest.raises(TypeError):
        DALLE2(prior=prior, decoder=decoder, decoder_num_samples=2)
    dalle2 = DALLE2(prior=prior, decoder=decoder)
    with pytest.raises(TypeError, match="strings"):
        dalle2([1, 2])
    with pytest.raises(ValueError, match="seed= or generator="):
        dalle2(["red"], seed=1, generator=torch.Generator())

"""Decoder options reach the parts they configure, and bad inpainting / cascade arguments fail with clear messages."""

import pytest
import torch

from dalle2_pytorch.decoder import Decoder

from .helpers import EMBED_DIM, TEXT_DIM, embeds, images, text_encodings, tiny_decoder, tiny_unet
from .test_decoder_latent import tiny_vae


def test_a_single_vae_is_the_first_unets_and_none_means_pixels():
    torch.manual_seed(0)
    vae = tiny_vae()
    unets = (tiny_unet(image_embed_dim=EMBED_DIM), tiny_unet())
    decoder = Decoder(unet=unets, vae=vae, image_sizes=(16, 32), timesteps=20)
    assert decoder.vaes[0] is vae and decoder.unets[0].channels == vae.encoded_dim
    pixels = Decoder(unet=(tiny_unet(image_embed_dim=EMBED_DIM),), vae=None, image_sizes=(8,), timesteps=20)
    assert pixels.unets[0].channels == 3 and not pixels.stage(1).is_latent


def test_lowres_downsample_first_reaches_every_upsampler():
    for flag in (True, False):
        decoder = tiny_decoder(3, lowres_downsample_first=flag)
        assert [c.downsample_first for c in decoder.lowres_conditioners] == [flag, flag]


def test_an_upsampler_without_low_res_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^unet 2 is an upsampler with neither use_noise_for_lowres_cond nor "
                                         r"use_blur_for_lowres_cond; enable at least one augmentation"):
        tiny_decoder(2, use_noise_for_lowres_cond=False, use_blur_for_lowres_cond=False)


def test_bad_inpainting_masks_are_clear_errors():
    decoder = tiny_decoder(1)
    known = images(size=8)
    with pytest.raises(ValueError, match=r"^inpaint_mask must have shape \(batch, height, width\) matching "
                                         r"inpaint_image \(2, 3, 8, 8\), got \(2, 4, 4\)"):
        decoder.sample(embeds(), inpaint_image=known, inpaint_mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^inpaint_mask must be boolean \(or 0/1\)"):
        decoder.sample(embeds(), inpaint_image=known, inpaint_mask=torch.full((2, 8, 8), 0.5))


def test_with_flags_given_a_list_equal_to_the_current_tuple_changes_nothing():
    unet = tiny_unet(image_embed_dim=EMBED_DIM)
    assert unet.with_flags(dim_mults=[1, 2]) is unet


def test_unet_rejects_an_odd_dim_no_dim_mults_and_a_text_batch_unlike_x():
    with pytest.raises(ValueError, match=r"^dim must be even \(it sizes a sin/cos time embedding\), got 15"):
        tiny_unet(dim=15)
    with pytest.raises(ValueError, match="dim_mults"):
        tiny_unet(dim_mults=())
    unet = tiny_unet(image_embed_dim=EMBED_DIM, cond_on_image_embeds=True, text_embed_dim=TEXT_DIM,
                     cond_on_text_encodings=True).eval()
    with pytest.raises(ValueError, match=r"^text_encodings has batch size 3 but x has 2"):
        unet(images(size=8), torch.zeros(2, dtype=torch.long), image_embed=embeds(),
             text_encodings=text_encodings(batch=3))

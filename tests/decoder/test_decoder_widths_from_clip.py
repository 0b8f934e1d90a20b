"""A decoder with a CLIP completes what its unets leave out: their embedding widths, and one int as image_sizes."""

import pytest
import torch

from dalle2_pytorch.decoder.decoder import Decoder
from tests.factories import tiny_clip, tiny_unet as small_unet


def test_one_int_image_sizes_and_widths_from_the_clip():
    clip = tiny_clip()
    decoder = Decoder(unet=small_unet(layer_cross_attns=(False, True)), clip=clip, timesteps=10, image_sizes=16)
    assert decoder.image_sizes == (16,)
    unet = decoder.unets[0]
    assert unet.image_embed_dim == clip.dim_latent == 16 and unet.cond_on_image_embeds
    assert unet.config["layer_cross_attns"] == {"__tuple__": [False, True]}  # kept through the rebuild
    loss = decoder(torch.rand(2, 3, 16, 16))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_text_width_from_the_clip_when_the_decoder_conditions_on_text():
    clip = tiny_clip()
    decoder = Decoder(unet=small_unet(), clip=clip, timesteps=10, image_sizes=16, condition_on_text_encodings=True)
    assert decoder.unets[0].text_embed_dim == decoder.clip.dim_text_encodings == 32
    images = decoder.sample(image_embed=torch.randn(1, 16), text=torch.randint(1, 100, (1, 8)), steps=2)
    assert images.shape == (1, 3, 16, 16)


def test_widths_are_still_required_without_a_clip_and_one_int_needs_one_unet():
    with pytest.raises(ValueError, match="has no image_embed_dim"):
        Decoder(unet=small_unet(), image_sizes=16)
    with pytest.raises(ValueError, match="image_sizes=\\(16,\\) has 1 entries for 2 unets"):
        Decoder(unet=(small_unet(), small_unet()), clip=tiny_clip(), image_sizes=16)

"""A decoder with a CLIP completes what its unets leave out: their embedding widths, and one int as image_sizes."""

import pytest
import torch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet


def tiny_clip(size: int = 16) -> CLIP:
    torch.manual_seed(0)
    return CLIP(dim_text=16, dim_image=16, dim_latent=12, num_text_tokens=49408, text_enc_depth=1, text_seq_len=8,
                text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8,
                visual_image_size=size, visual_patch_size=8)


def small_unet(**kwargs) -> Unet:
    return Unet(dim=16, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=2, attn_dim_head=8, **kwargs)


def test_one_int_image_sizes_and_widths_from_the_clip():
    clip = tiny_clip()
    decoder = Decoder(unet=small_unet(layer_cross_attns=(False, True)), clip=clip, timesteps=10, image_sizes=16)
    assert decoder.image_sizes == (16,)
    unet = decoder.unets[0]
    assert unet.image_embed_dim == clip.dim_latent == 12 and unet.cond_on_image_embeds
    assert unet.config["layer_cross_attns"] == {"__tuple__": [False, True]}  # kept through the rebuild
    loss = decoder(torch.rand(2, 3, 16, 16))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_text_width_from_the_clip_when_the_decoder_conditions_on_text():
    clip = tiny_clip()
    decoder = Decoder(unet=small_unet(), clip=clip, timesteps=10, image_sizes=16, condition_on_text_encodings=True)
    assert decoder.unets[0].text_embed_dim == decoder.clip.dim_text_encodings == 16
    images = decoder.sample(image_embed=torch.randn(1, 12), text=torch.randint(1, 100, (1, 8)), steps=2)
    assert images.shape == (1, 3, 16, 16)


def test_widths_are_still_required_without_a_clip_and_one_int_needs_one_unet():
    with pytest.raises(ValueError, match="has no image_embed_dim"):
        Decoder(unet=small_unet(), image_sizes=16)
    with pytest.raises(ValueError, match="image_sizes=\\(16,\\) has 1 entries for 2 unets"):
        Decoder(unet=(small_unet(), small_unet()), clip=tiny_clip(), image_sizes=16)

"""Latent diffusion in the cascade: a unet with a VQGanVAE diffuses in its latent space."""

import warnings
from functools import partial

import pytest
import torch

from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.decoder.lowres import resize_image_to
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE, VQGanVAE
from tests.factories import tiny_vae as factory_vae

from .helpers import EMBED_DIM, embeds, images, tiny_unet

# one VQ layer (latents at half the image size), no discriminator: the decoder never trains the VAE
tiny_vae = partial(factory_vae, layers=1, use_vgg_and_gan=False, attn_heads=1)


def latent_cascade(**kwargs) -> Decoder:
    torch.manual_seed(0)
    unets = (tiny_unet(image_embed_dim=EMBED_DIM), tiny_unet())
    return Decoder(unet=unets, vae=(tiny_vae(),), image_sizes=(16, 32), timesteps=100, **kwargs)


def test_unet_channels_and_sizes_follow_the_vae():
    decoder = latent_cascade()
    vae = decoder.vaes[0]
    assert decoder.unets[0].channels == vae.encoded_dim and decoder.unets[0].channels_out == 2 * vae.encoded_dim
    assert isinstance(decoder.vaes[1], NullVQGanVAE) and decoder.unets[1].channels == 3
    assert all(not p.requires_grad for p in vae.parameters())


def test_training_encodes_targets_and_keeps_the_vae_frozen():
    """The unet is trained on noised VAE latents of the resized target: two batches drawn with the same noise and
    times differ at the unet's input by exactly sqrt(alpha_bar_t) times the difference of their latents."""
    decoder = latent_cascade()
    before = {k: v.clone() for k, v in decoder.vaes[0].state_dict().items()}
    inputs = []
    original_forward = decoder.unets[0].forward

    def spy(x, t, **kwargs):
        inputs.append((x.detach(), t))
        return original_forward(x, t, **kwargs)

    decoder.unets[0].forward = spy
    pictures = (images(size=32), images(size=32).flip(-1))
    for picture in pictures:
        torch.manual_seed(3)
        loss = decoder(picture, image_embed=embeds(), unet_number=1)
    loss.backward()
    assert torch.isfinite(loss)
    (x_a, t), (x_b, t_b) = inputs
    stage = decoder.stage(1)
    latents = [stage.encode(resize_image_to(decoder.normalize_img(p), 16)) for p in pictures]
    assert x_a.shape == latents[0].shape == (2, decoder.vaes[0].encoded_dim, 8, 8) and torch.equal(t, t_b)
    scale = stage.schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_a - x_b, scale * (latents[0] - latents[1]), atol=1e-5, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in decoder.vaes[0].state_dict().items())
    assert all(p.grad is None for p in decoder.vaes[0].parameters())


def test_sampling_decodes_latents_and_feeds_decoded_images_to_the_next_unet():
    decoder = latent_cascade()
    seen = []
    original_forward = decoder.unets[1].forward

    def spy(x, t, **kwargs):
        seen.append(kwargs["lowres_cond_img"])
        return original_forward(x, t, **kwargs)

    decoder.unets[1].forward = spy
    with pytest.warns(UserWarning, match="never trained"):
        out = decoder.sample(embeds(), sampler="ddim", steps=2)
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert seen and seen[0].shape == (2, 3, 32, 32)   # pixels, not latents


def test_predict_x_start_for_latent_diffusion_sets_the_objective_of_vae_unets_only():
    decoder = latent_cascade(predict_x_start_for_latent_diffusion=True)
    assert [s.objective for s in decoder.stages] == ["x0", "eps"]


def test_vae_mismatches_are_clear_errors():
    unets = (tiny_unet(image_embed_dim=EMBED_DIM), tiny_unet())
    with pytest.raises(ValueError, match="channels"):
        Decoder(unet=unets, vae=(tiny_vae(channels=1),), image_sizes=(16, 32))
    with pytest.raises(ValueError, match="divisible"):
        Decoder(unet=unets, vae=(tiny_vae(layers=2),), image_sizes=(6, 32))
    with pytest.raises(ValueError, match="only 2 unets"):
        Decoder(unet=unets, vae=(tiny_vae(), tiny_vae(), tiny_vae()), image_sizes=(16, 32))


def test_latent_decoder_save_load_round_trip(tmp_path):
    decoder = latent_cascade()
    decoder.save_pretrained(tmp_path)
    loaded = Decoder.from_pretrained(tmp_path)
    assert loaded.unets[0].channels == decoder.unets[0].channels
    for (name, a), b in zip(decoder.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = decoder.sample(embeds(), sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
        b = loaded.sample(embeds(), sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_latent_upsampler_with_noise_augmentation_noises_the_latent():
    """Imagen noise augmentation of a latent upsampler is added to the encoded condition (the VAE only
    ever encodes images in [-1, 1])."""
    torch.manual_seed(0)
    unets = (tiny_unet(image_embed_dim=EMBED_DIM), tiny_unet())
    decoder = Decoder(unet=unets, vae=(None, tiny_vae(image_size=32)), image_sizes=(16, 32), timesteps=100,
                      use_noise_for_lowres_cond=True)
    loss, lowres = decoder(images(size=32), image_embed=embeds(), unet_number=2, return_lowres_cond_image=True)
    assert torch.isfinite(loss) and lowres.shape == (2, decoder.vaes[1].encoded_dim, 16, 16)
    with pytest.warns(UserWarning, match="never trained"):
        assert decoder.sample(embeds(), sampler="ddim", steps=2).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="random crops"):
        Decoder(unet=unets, vae=(None, tiny_vae(image_size=32)), image_sizes=(16, 32), random_crop_sizes=(None, 16))

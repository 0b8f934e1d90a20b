"""The seed README's decoder examples, shrunk to CPU size but otherwise unchanged in their calls."""

import warnings

import torch

from dalle2_pytorch import CLIP, Decoder, Unet, VQGanVAE


def small_clip(image_size: int = 32) -> CLIP:
    return CLIP(dim_text=32, dim_image=32, dim_latent=32, num_text_tokens=49408, text_enc_depth=1, text_seq_len=16,
                text_heads=2, visual_enc_depth=1, visual_image_size=image_size, visual_patch_size=8, visual_heads=2)


def test_readme_decoder_with_clip():
    clip = small_clip()
    unet = Unet(dim=8, image_embed_dim=32, cond_dim=8, channels=3, dim_mults=(1, 2))
    decoder = Decoder(unet=unet, clip=clip, timesteps=100, image_cond_drop_prob=0.1, text_cond_drop_prob=0.5)
    images = torch.randn(4, 3, 32, 32)
    loss = decoder(images)
    loss.backward()
    assert torch.isfinite(loss)


def test_readme_cascade_with_text_conditioning_and_inpainting():
    clip = small_clip()
    text = torch.randint(0, 49408, (2, 16))
    images = torch.randn(2, 3, 32, 32)
    unet1 = Unet(dim=8, image_embed_dim=32, text_embed_dim=32, cond_dim=8, channels=3, dim_mults=(1, 2))
    unet2 = Unet(dim=8, image_embed_dim=32, text_embed_dim=32, cond_dim=8, channels=3, dim_mults=(1, 2),
                 cond_on_text_encodings=True)
    decoder = Decoder(unet=(unet1, unet2), image_sizes=(16, 32), clip=clip, timesteps=100,
                      condition_on_text_encodings=True)
    for unet_number in (1, 2):
        loss = decoder(images, text=text, unet_number=unet_number)
        loss.backward()
        assert torch.isfinite(loss)
    mock_image_embed = torch.randn(2, 32)
    assert decoder.sample(mock_image_embed, text=text, sampler="ddim", steps=2).shape == (2, 3, 32, 32)

    inpaint_image = torch.rand(2, 3, 32, 32)
    inpaint_mask = torch.ones(2, 32, 32).bool()
    inpaint_mask[:, 8:24, 8:24] = False
    inpainted_images = decoder.sample(image_embed=mock_image_embed, text=text, inpaint_image=inpaint_image,
                                      inpaint_mask=inpaint_mask, steps=2, inpaint_resample_times=2)
    assert inpainted_images.shape == (2, 3, 32, 32)
    assert torch.equal(inpainted_images[:, :, :8], inpaint_image[:, :, :8])


def test_readme_latent_diffusion_cascade():
    clip = small_clip()
    vae1 = VQGanVAE(dim=8, image_size=32, layers=3, layer_mults=(1, 2, 4), use_vgg_and_gan=False)
    vae2 = VQGanVAE(dim=8, image_size=64, layers=3, layer_mults=(1, 2, 4), use_vgg_and_gan=False)
    unet1 = Unet(dim=8, image_embed_dim=32, cond_dim=8, channels=3, sparse_attn=True, sparse_attn_window=2,
                 dim_mults=(1, 2))
    unet2 = Unet(dim=8, image_embed_dim=32, channels=3, dim_mults=(1, 2), cond_on_image_embeds=True,
                 cond_on_text_encodings=False)
    unet3 = Unet(dim=8, image_embed_dim=32, channels=3, dim_mults=(1, 2), cond_on_image_embeds=True,
                 cond_on_text_encodings=False, attend_at_middle=False)
    decoder = Decoder(clip=clip, vae=(vae1, vae2), unet=(unet1, unet2, unet3), image_sizes=(32, 64, 128),
                      timesteps=100, image_cond_drop_prob=0.1, text_cond_drop_prob=0.5)
    images = torch.randn(1, 3, 128, 128)
    for n in (1, 2, 3):
        with decoder.one_unet_in_gpu(n):
            loss = decoder(images, unet_number=n)
            loss.backward()
            assert torch.isfinite(loss)
    mock_image_embed = torch.randn(1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the VAEs are untrained here
        images = decoder.sample(mock_image_embed, sampler="ddim", steps=2)
    assert images.shape == (1, 3, 128, 128)


def test_readme_unconditional_cascade():
    batch_size = 3
    unet1 = Unet(dim=8, dim_mults=(1, 2))
    unet2 = Unet(dim=8, dim_mults=(1, 2))
    decoder = Decoder(unet=(unet1, unet2), image_sizes=(16, 32), timesteps=100, unconditional=True)
    images = torch.randn(1, 3, 32, 32)
    for i in (1, 2):
        loss = decoder(images, unet_number=i)
        loss.backward()
    assert decoder.sample(batch_size=batch_size, sampler="ddim", steps=2).shape == (batch_size, 3, 32, 32)

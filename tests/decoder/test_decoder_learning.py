"""The decoder learns: class-conditional generation with guidance, and super-resolution in a cascade."""

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.decoder import Decoder

from .helpers import tiny_unet

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def _train(decoder: Decoder, params, steps: int, batch_fn, unet_number: int = 1, lr: float = 2e-3) -> float:
    optimiser = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        images, kwargs = batch_fn()
        loss = decoder(images, unet_number=unet_number, **kwargs)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return loss.item()


@pytest.mark.slow
def test_decoder_generates_the_colour_of_its_image_embedding():
    """4 solid colours, each with a fixed random 'CLIP embedding'; after 200 steps the guided samples
    (DPM-Solver++, 15 steps, cond_scale 3) have the embedded colour >= 90 % of the time."""
    torch.manual_seed(0)
    class_embeds = F.normalize(torch.randn(4, 8), dim=-1)
    unet = tiny_unet(dim=16, cond_dim=16, image_embed_dim=8, attn_heads=2)
    decoder = Decoder(unet=unet, image_size=8, timesteps=100, predict_v=True, image_cond_drop_prob=0.2)

    def batch():
        labels = torch.randint(0, 4, (32,))
        return COLOURS[labels][:, :, None, None].expand(-1, -1, 8, 8), {"image_embed": class_embeds[labels]}

    final_loss = _train(decoder, decoder.parameters(), 200, batch)
    assert final_loss < 0.2
    labels = torch.arange(4).repeat(8)
    samples = decoder.sample(class_embeds[labels], cond_scale=3.0, sampler="dpmpp_2m", steps=15,
                             generator=torch.Generator().manual_seed(0))
    predicted = torch.cdist(samples.mean(dim=(2, 3)), COLOURS).argmin(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.9, f"colour accuracy {accuracy:.2f}"


def _smooth_images(n: int, size: int = 16) -> torch.Tensor:
    """Random colour gradients: smooth, so a good upsampler interpolates what nearest blocks."""
    grid = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    a, b, c = torch.rand(n, 3, 1, 1), torch.rand(n, 3, 1, 1) * 2 - 1, torch.rand(n, 3, 1, 1) * 2 - 1
    return (a + b * xx + c * yy).clamp(0, 1)


@pytest.mark.slow
def test_cascade_upsampler_beats_nearest_upsampling():
    """Unet 2 of a 4 -> 16 px cascade, trained 150 steps on gradients, upsamples held-out 4 px images with
    less than half the squared error of nearest-neighbour upsampling."""
    torch.manual_seed(0)
    unets = (tiny_unet(image_embed_dim=4), tiny_unet(dim=16, cond_dim=16, attn_heads=2))
    decoder = Decoder(unet=unets, image_sizes=(4, 16), timesteps=100, predict_x_start=(False, True),
                      learned_variance=False)
    null_embed = torch.zeros(16, 4)
    _train(decoder, decoder.unets[1].parameters(), 150, lambda: (_smooth_images(16), {"image_embed": null_embed}),
           unet_number=2)

    truth = _smooth_images(16)
    low = F.interpolate(truth, size=4, mode="nearest")
    upsampled = decoder.sample(null_embed, start_at_unet_number=2, image=low, sampler="ddim", steps=10,
                               generator=torch.Generator().manual_seed(0))
    nearest = F.interpolate(low, size=16, mode="nearest")
    model_error, nearest_error = F.mse_loss(upsampled, truth).item(), F.mse_loss(nearest, truth).item()
    assert model_error < 0.5 * nearest_error, f"upsampler MSE {model_error:.5f} vs nearest {nearest_error:.5f}"


@pytest.mark.slow
def test_latent_diffusion_unet_generates_the_embedded_colour():
    """A small VQGanVAE trained 100 steps on the colours, then a unet trained 200 steps on its frozen latents:
    decoded guided samples have the embedded colour >= 80 % of the time."""
    from dalle2_pytorch.vae.vqgan_vae import VQGanVAE

    torch.manual_seed(0)
    class_embeds = F.normalize(torch.randn(4, 8), dim=-1)

    def batch():
        labels = torch.randint(0, 4, (32,))
        return COLOURS[labels][:, :, None, None].expand(-1, -1, 8, 8), labels

    vae = VQGanVAE(dim=8, image_size=8, layers=1, use_vgg_and_gan=False, vq_codebook_dim=4, vq_codebook_size=16,
                   attn_heads=1, attn_dim_head=8)
    vae_optimiser = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(100):
        loss = vae(batch()[0] * 2 - 1, return_loss=True)
        vae_optimiser.zero_grad()
        loss.backward()
        vae_optimiser.step()

    unet = tiny_unet(dim=16, cond_dim=16, image_embed_dim=8, attn_heads=2)
    decoder = Decoder(unet=unet, vae=(vae,), image_size=8, timesteps=100, predict_v=True, image_cond_drop_prob=0.2)
    assert decoder.unets[0].channels == vae.encoded_dim

    def unet_batch():
        images, labels = batch()
        return images, {"image_embed": class_embeds[labels]}

    _train(decoder, decoder.unets.parameters(), 200, unet_batch)
    labels = torch.arange(4).repeat(8)
    samples = decoder.sample(class_embeds[labels], cond_scale=3.0, sampler="dpmpp_2m", steps=15,
                             generator=torch.Generator().manual_seed(0))
    predicted = torch.cdist(samples.mean(dim=(2, 3)), COLOURS).argmin(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.8, f"colour accuracy {accuracy:.2f}"

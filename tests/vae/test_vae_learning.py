"""A small VQGanVAE learns to reconstruct synthetic coloured shapes (CPU, a few hundred steps)."""

from __future__ import annotations

import pytest
import torch

from dalle2_pytorch.vae import VQGanVAE
from tests.vae.synthetic_images import box_blurred, coloured_shapes, psnr


@pytest.mark.slow
def test_vqgan_vae_reconstructs_shapes_better_than_a_blurred_input_and_uses_many_codes():
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    vae = VQGanVAE(dim=16, image_size=16, layers=2, vq_codebook_dim=16, vq_codebook_size=64, attn_heads=2,
                   attn_dim_head=16, l2_recon_loss=True, use_vgg_and_gan=False)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    held_out = coloured_shapes(64, 16, data)
    for _ in range(500):
        loss = vae(coloured_shapes(16, 16, data), return_loss=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    vae.eval()
    with torch.no_grad():
        reconstruction_psnr = psnr(vae(held_out), held_out)
    # Baseline: the input blurred to the latent grid's resolution (4x4 blocks) and upsampled back.
    blurred_psnr = psnr(box_blurred(held_out, vae.downsample_factor), held_out)
    codes_used = vae.codebook_indices(held_out).unique().numel()
    print(f"PSNR {reconstruction_psnr:.2f} dB vs blurred {blurred_psnr:.2f} dB, {codes_used} codes used")
    assert reconstruction_psnr > blurred_psnr + 2.0
    assert codes_used > 8

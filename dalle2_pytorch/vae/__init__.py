"""VQGAN autoencoders for latent diffusion: VQGanVAE, NullVQGanVAE and their trainer."""

from dalle2_pytorch.vae.perceptual import RandomFeatureNet
from dalle2_pytorch.vae.trainer import VQGanVAETrainer
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE, VQGanVAE

__all__ = ["NullVQGanVAE", "RandomFeatureNet", "VQGanVAE", "VQGanVAETrainer"]

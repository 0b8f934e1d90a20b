"""VQGAN autoencoders for latent diffusion: VQGanVAE and NullVQGanVAE (their trainer, ``VQGanVAETrainer``, is in
:mod:`dalle2_pytorch.trainers` beside the other trainers, and exported at the top level)."""

from dalle2_pytorch.vae.perceptual import RandomFeatureNet
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE, VQGanVAE

__all__ = ["NullVQGanVAE", "RandomFeatureNet", "VQGanVAE"]

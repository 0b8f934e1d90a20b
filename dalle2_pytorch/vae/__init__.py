"""VQGAN autoencoders for latent diffusion: VQGanVAE, NullVQGanVAE (and their trainer, loaded on first use)."""

from dalle2_pytorch.vae.perceptual import RandomFeatureNet
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE, VQGanVAE

__all__ = ["NullVQGanVAE", "RandomFeatureNet", "VQGanVAE", "VQGanVAETrainer"]


def __getattr__(name: str):
    # the trainer sits in the trainers layer (which imports the decoder, which imports this package): load it lazily
    if name == "VQGanVAETrainer":
        from dalle2_pytorch.trainers.vae_trainer import VQGanVAETrainer

        return VQGanVAETrainer
    raise AttributeError(f"module 'dalle2_pytorch.vae' has no attribute {name!r}")

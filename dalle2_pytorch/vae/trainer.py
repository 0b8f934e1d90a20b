"""The VAE trainer's documented import path: :class:`VQGanVAETrainer` lives in :mod:`dalle2_pytorch.trainers`
(beside the prior and decoder trainers, over their shared core)."""

from dalle2_pytorch.trainers.vae_trainer import VQGanVAETrainer

__all__ = ["VQGanVAETrainer"]

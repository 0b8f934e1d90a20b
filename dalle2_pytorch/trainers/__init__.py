"""Trainers: optimisers, EMA, gradient accumulation, mixed precision and checkpoints for the prior and decoder."""

from dalle2_pytorch.trainers.checkpoint import rebuild_model
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer

__all__ = ["DecoderTrainer", "DiffusionPriorTrainer", "rebuild_model"]

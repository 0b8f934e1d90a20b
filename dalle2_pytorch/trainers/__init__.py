"""Trainers: optimisers, EMA, gradient accumulation, mixed precision and checkpoints for the prior, decoder, the whole
pipeline (``DALLE2Trainer``), VAE and any other model (``ModelTrainer``)."""

from dalle2_pytorch.trainers.checkpoint import rebuild_model
from dalle2_pytorch.trainers.dalle2_trainer import DALLE2Trainer
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from dalle2_pytorch.trainers.model_trainer import ModelTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from dalle2_pytorch.trainers.vae_trainer import VQGanVAETrainer

__all__ = ["DALLE2Trainer", "DecoderTrainer", "DiffusionPriorTrainer", "ModelTrainer", "VQGanVAETrainer", "rebuild_model"]

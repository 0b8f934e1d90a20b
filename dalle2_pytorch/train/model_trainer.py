"""Former home of :class:`~dalle2_pytorch.trainers.model_trainer.ModelTrainer`; kept until ``train/demo.py`` imports
it from ``dalle2_pytorch.trainers`` (then delete this module)."""

from dalle2_pytorch.trainers.model_trainer import ModelTrainer

__all__ = ["ModelTrainer"]

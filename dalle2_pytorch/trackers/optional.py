"""TensorBoard and Weights & Biases trackers; their packages are optional and imported only when used."""

from __future__ import annotations

import importlib
import os
from typing import Any, Mapping, Sequence

import torch

from dalle2_pytorch.trackers.base import Tracker, _plain
from dalle2_pytorch.images import captioned_grid


def _require(module: str, tracker: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"the {tracker} tracker needs the `{pip_name}` package: pip install {pip_name} "
                          f"(or choose another tracker)") from error


class TensorBoardTracker(Tracker):
    """Scalars and image grids into a TensorBoard log directory (needs ``tensorboard``)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        import numpy as np

        grid = np.asarray(captioned_grid(images, list(captions)))
        self.writer.add_image(name, grid, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """Weights & Biases run; ``mode='offline'`` writes locally and needs no network or account (needs ``wandb``)."""

    def __init__(self, *, project: str, run_name: str | None = None, entity: str | None = None,
                 mode: str = "online", directory: str | os.PathLike | None = None) -> None:
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"mode={mode!r}: choose 'online', 'offline' or 'disabled'")
        self.wandb = _require("wandb", "wandb", "wandb")
        self.run = self.wandb.init(project=project, name=run_name, entity=entity, mode=mode,
                                   dir=None if directory is None else str(directory))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log({k: _plain(v) for k, v in metrics.items()}, step=step)

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        self.run.log({name: self.wandb.Image(captioned_grid(images, list(captions)))}, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        self.run.finish()

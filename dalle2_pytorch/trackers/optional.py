"""TensorBoard and Weights & Biases trackers; their packages are optional and imported only when used."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
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
    """Scalars and image grids into a TensorBoard log directory (needs ``tensorboard``).

    On a resume (:meth:`resumed`, before anything is logged) the event file is opened with ``purge_step`` one past
    the checkpoint's step: TensorBoard then hides what the interrupted run logged after the checkpoint (about to be
    logged again), so every step appears once, and a text entry ``resume`` marks the step the run went on from."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        self.log_dir = str(log_dir)
        self.purge_step: int | None = None
        self._writer = None

    @property
    def writer(self):
        """The SummaryWriter, opened at first use (so a resume can still set its ``purge_step``)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=self.purge_step)
        return self._writer

    def resumed(self, step: int, changes: Sequence[str] = ()) -> None:
        if self._writer is not None:  # events already written stay; a new file carries the purge
            self._writer.close()
            self._writer = None
        self.purge_step = step + 1
        text = f"resumed from the checkpoint of step {step}" + (f"; changed: {'; '.join(changes)}" if changes else "")
        self.writer.add_text("resume", text, step)

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
        if self._writer is not None:
            self._writer.close()


class WandbTracker(Tracker):
    """Weights & Biases run; ``mode='offline'`` writes locally and needs no network or account (needs ``wandb``).

    ``run_id_file``: where the W&B run id is kept (a training run's ``logs/wandb_run_id``).  On a resume
    (:meth:`resumed`, before anything is logged) the run is reopened with that id (``resume='allow'``), so a resumed
    training run goes on logging into the same W&B run instead of starting another one."""

    def __init__(self, *, project: str, run_name: str | None = None, entity: str | None = None,
                 mode: str = "online", directory: str | os.PathLike | None = None,
                 run_id_file: str | os.PathLike | None = None) -> None:
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"mode={mode!r}: choose 'online', 'offline' or 'disabled'")
        self.wandb = _require("wandb", "wandb", "wandb")
        self.settings = {"project": project, "name": run_name, "entity": entity, "mode": mode,
                         "dir": None if directory is None else str(directory)}
        self.run_id_file = None if run_id_file is None else Path(run_id_file)
        self.resume_id: str | None = None
        self._run = None

    @property
    def run(self):
        """The W&B run, started at first use (so that a resume can still give it the id to continue)."""
        if self._run is None:
            resume = {"id": self.resume_id, "resume": "allow"} if self.resume_id else {}
            self._run = self.wandb.init(**self.settings, **resume)
            if self.run_id_file is not None and not self.resume_id:
                from dalle2_pytorch.atomic import atomic_write_bytes

                self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.run_id_file, self._run.id.encode())
        return self._run

    def resumed(self, step: int, changes: Sequence[str] = ()) -> None:
        if self.run_id_file is not None and self.run_id_file.is_file():
            self.resume_id = self.run_id_file.read_text().strip() or None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log({k: _plain(v) for k, v in metrics.items()}, step=step)

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        self.run.log({name: self.wandb.Image(captioned_grid(images, list(captions)))}, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()

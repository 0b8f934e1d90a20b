"""Training checkpoints of the config-driven loops: ``<dir>/latest`` and ``<dir>/best``.

Each holds ``model/`` (``save_pretrained``: usable by ``from_pretrained`` and ``dalle2 sample``), ``ema_model/`` when
an EMA is kept, ``training_state.json`` (step/epoch/sample counters, the data position) and, in ``latest``,
``trainer.safetensors``: the library trainer's own checkpoint (weights, optimisers, EMAs, RNG states).  A checkpoint is
written into a temporary folder and swapped in by rename, so a run killed while saving keeps the previous one.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dalle2_pytorch.serialization import load_json, save_json

TRAINER_FILE = "trainer.safetensors"
STATE_JSON = "training_state.json"


@contextmanager
def ema_weights(trainer) -> Iterator[None]:
    """The trainer's EMA weights in place of the online ones, for evaluation, samples and ``ema_model/``."""
    online = {}
    for name, part in trainer.parts.items():
        if part.ema is not None:
            online[name] = {k: v.clone() for k, v in part.module.state_dict().items()}
            part.module.load_state_dict(part.ema.ema_model.state_dict())
    try:
        yield
    finally:
        for name, state in online.items():
            trainer.parts[name].module.load_state_dict(state)


def save_checkpoint(directory: Path, trainer, counters: dict[str, Any], with_training_state: bool = True) -> Path:
    """Write a checkpoint folder at ``directory`` (replacing any previous one atomically).

    Every process calls it (the trainer's save waits for all); only the main process writes."""
    directory = Path(directory)
    staging = directory.parent / f".{directory.name}.partial"
    main = trainer.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        trainer.model.save_pretrained(staging / "model")
        if any(part.ema is not None for part in trainer.parts.values()):
            with ema_weights(trainer):
                trainer.model.save_pretrained(staging / "ema_model")
        save_json({"counters": counters}, staging / STATE_JSON)
    if with_training_state:
        trainer.save(staging / TRAINER_FILE)
    if main:
        old = directory.parent / f".{directory.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        staging.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    return directory


def recover_interrupted_swap(directory: Path) -> None:
    """A run killed between the two renames of :func:`save_checkpoint` left only ``.<name>.old``: put it back."""
    directory = Path(directory)
    old = directory.parent / f".{directory.name}.old"
    if not directory.exists() and (old / STATE_JSON).is_file():
        old.rename(directory)


def read_counters(directory: Path) -> dict[str, Any] | None:
    recover_interrupted_swap(directory)
    path = Path(directory) / STATE_JSON
    return load_json(path)["counters"] if path.is_file() else None


def load_checkpoint(directory: Path, trainer) -> dict:
    """Restore weights, optimisers, EMAs and RNG states through the trainer; returns the counters."""
    directory = Path(directory)
    if not (directory / TRAINER_FILE).is_file():
        raise ValueError(f"{directory} holds weights only (a 'best' checkpoint); resume from 'latest'")
    trainer.load(directory / TRAINER_FILE)
    return load_json(directory / STATE_JSON)["counters"]

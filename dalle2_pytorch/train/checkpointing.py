"""Training checkpoints of the config-driven loops: ``<dir>/latest`` and ``<dir>/best``.

Each holds ``model/`` (``save_pretrained``: usable by ``from_pretrained`` and ``dalle2 sample``), ``ema_model/`` when
an EMA is kept, and ``training_state.safetensors`` + ``training_state.json`` (optimiser tensors and hyper-parameters,
RNG states, step/epoch/sample counters, the data position).  A checkpoint is written into a temporary folder and
swapped in by rename, so a run killed while saving keeps the previous one.  Nothing is unpickled on load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from dalle2_pytorch.serialization import load_json, load_tensors, save_json, save_tensors
from dalle2_pytorch.trainers.checkpoint import (capture_rng_state, flatten_optimizer_state, restore_rng_state,
                                                unflatten_optimizer_state)

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def save_checkpoint(directory: Path, *, model, ema_model, optimizers: dict[str, torch.optim.Optimizer],
                    counters: dict[str, Any], with_training_state: bool = True) -> Path:
    """Write a checkpoint folder at ``directory`` (replacing any previous one atomically)."""
    directory = Path(directory)
    staging = directory.parent / f".{directory.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging / "model")
    if ema_model is not None:
        ema_model.save_pretrained(staging / "ema_model")
    meta: dict[str, Any] = {"counters": counters}
    if with_training_state:
        tensors: dict[str, torch.Tensor] = {}
        meta["optimizers"] = {}
        for name, optimizer in optimizers.items():
            optim_tensors, rest = flatten_optimizer_state(optimizer.state_dict(), f"optim.{name}")
            tensors.update(optim_tensors)
            meta["optimizers"][name] = rest
        rng_tensors, rng_meta = capture_rng_state()
        tensors.update(rng_tensors)
        meta["rng"] = rng_meta
        save_tensors(tensors or {"empty": torch.zeros(1)}, staging / STATE_TENSORS)
    save_json(meta, staging / STATE_JSON)
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


def load_checkpoint(directory: Path, *, model, ema_model, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore weights, optimisers and RNG states in place; returns the counters."""
    directory = Path(directory)
    meta = load_json(directory / STATE_JSON)
    if "optimizers" not in meta:
        raise ValueError(f"{directory} holds weights only (a 'best' checkpoint); resume from 'latest'")
    model.load_state_dict(load_tensors(directory / "model" / "model.safetensors"))
    if ema_model is not None and (directory / "ema_model").is_dir():
        ema_model.load_state_dict(load_tensors(directory / "ema_model" / "model.safetensors"))
    tensors = load_tensors(directory / STATE_TENSORS)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizers"][name], f"optim.{name}"))
    restore_rng_state(tensors, meta["rng"])
    return meta["counters"]

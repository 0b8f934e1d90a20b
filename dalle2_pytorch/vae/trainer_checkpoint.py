"""Checkpoint folders of the VAE trainer: safetensors for tensors, JSON for the rest, swapped in atomically.

Layout of ``<folder>/``::

    model/          VQGanVAE.save_pretrained (config.json + model.safetensors)
    ema_model/      the EMA copy, same format (load it with VQGanVAE.from_pretrained)
    trainer.safetensors   optimiser tensors and the EMA wrapper's state
    trainer.json          step, optimiser hyper-parameters and scalar state

The folder is written under a temporary name and renamed into place, so a crash mid-save never leaves
a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from dalle2_pytorch.serialization import (flatten_optimizer_state, load_json, load_tensors, save_json,  # noqa: F401
                                          save_tensors, unflatten_optimizer_state)


def write_checkpoint(folder: str | os.PathLike, *, model: Any, ema_model: Any | None,
                     optimizers: dict[str, torch.optim.Optimizer], ema_state: dict[str, torch.Tensor] | None,
                     step: int) -> Path:
    """Write a complete checkpoint folder (see the module docstring); returns its path."""
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging / "model")
    if ema_model is not None:
        ema_model.save_pretrained(staging / "ema_model")
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "optimizers": {}}
    for name, optimizer in optimizers.items():
        opt_tensors, rest = flatten_optimizer_state(optimizer.state_dict(), f"optim.{name}")
        tensors.update(opt_tensors)
        meta["optimizers"][name] = rest
    for key, value in (ema_state or {}).items():
        tensors[f"ema.{key}"] = value
    save_tensors(tensors, staging / "trainer.safetensors")
    save_json(meta, staging / "trainer.json")
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old)
    else:
        os.replace(staging, folder)
    return folder


def read_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[int, dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Return (step, optimizer state dicts by name, EMA state) from a folder written by :func:`write_checkpoint`."""
    folder = Path(folder)
    meta_path = folder / "trainer.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {folder} a VQGanVAETrainer checkpoint?")
    meta = load_json(meta_path)
    tensors = load_tensors(folder / "trainer.safetensors", device=device)
    optimizers = {name: unflatten_optimizer_state(tensors, rest, f"optim.{name}")
                  for name, rest in meta["optimizers"].items()}
    ema_state = {key[len("ema."):]: value for key, value in tensors.items() if key.startswith("ema.")}
    return int(meta["step"]), optimizers, ema_state

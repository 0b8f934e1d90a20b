"""Training checkpoints: one safetensors file holding tensors plus a JSON header, and the checkpoint folder around it.

A checkpoint holds everything needed to continue training exactly: the model's state dict
(``model.*``), each EMA (``ema.<part>.*``), each optimiser's tensors (``optim.<part>.*``), the RNG
states (``rng.*``) and, as JSON in the safetensors metadata, the step counters, optimiser
hyper-parameters, grad-scaler state, RNG states of ``random``/``numpy`` and the model's config
(enough to rebuild it with :func:`rebuild_model`).  The file is written to a temporary name,
fsynced and renamed (:func:`dalle2_pytorch.serialization.save_tensors`), so a process killed while
saving leaves the previous checkpoint intact.  Nothing is ever unpickled when loading.

A checkpoint *folder* (what the training runs and :class:`~dalle2_pytorch.trainers.VQGanVAETrainer` write) holds::

    model/                 save_pretrained of the model (from_pretrained, `dalle2 sample`)
    ema_model/             the same with the EMA weights, when the trainer keeps EMAs
    training_state.json    {"counters": {...}}: the loop's step/epoch/data-position counters
    trainer.safetensors    the trainer's checkpoint file above (absent in weights-only folders such as `best`)

It is written into a staging folder and swapped in (:mod:`dalle2_pytorch.atomic`), so a run killed while saving keeps
the previous folder; the readers here first undo a swap that was killed half-way.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from dalle2_pytorch.errors import reading
from dalle2_pytorch.atomic import begin_folder, commit_folder, recover_interrupted_swap
from dalle2_pytorch.serialization import (flatten_optimizer_state, load_json, resolve_class, save_json,  # noqa: F401
                                          save_tensors, unflatten_optimizer_state)

CHECKPOINT_FORMAT_VERSION = 1
METADATA_KEY = "dalle2_pytorch_training_state"
TRAINER_FILE = "trainer.safetensors"
STATE_JSON = "training_state.json"


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for key, value in state.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {key[start:]: value for key, value in tensors.items() if key.startswith(prefix + ".")}


# ----------------------------------------------------------------------------- random number generators
def capture_rng_state(prefix: str = "rng") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The states of torch (CPU and every CUDA device), ``random`` and ``numpy``'s global generators."""
    tensors = {f"{prefix}.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}.cuda.{index}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "rng") -> None:
    torch.set_rng_state(tensors[f"{prefix}.torch"].cpu())
    cuda_states = [tensors[f"{prefix}.cuda.{i}"].cpu() for i in range(len(tensors))
                   if f"{prefix}.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def rank_rng_states(states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One checkpoint's worth of the RNG states of every rank (``states[r]`` from :func:`capture_rng_state` on rank
    r): rank 0's under ``rng.*`` and meta ``rng`` (what single-process checkpoints hold), rank r's under
    ``rng.rank<r>.*`` and meta ``rng_ranks[str(r)]``; meta ``rng_world_size`` says how many ranks wrote."""
    tensors, meta0 = states[0]
    tensors = dict(tensors)
    per_rank = {}
    for rank, (rank_tensors, rank_meta) in enumerate(states[1:], start=1):
        tensors.update({f"rng.rank{rank}.{key[len('rng.'):]}": value for key, value in rank_tensors.items()})
        per_rank[str(rank)] = rank_meta
    return tensors, {"rng": meta0, "rng_ranks": per_rank, "rng_world_size": len(states)}


def restore_rank_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], rank: int,
                           world_size: int) -> None:
    """Restore this rank's RNG states from a checkpoint (see :func:`rank_rng_states`).

    Every rank gets its own state back, so ranks keep drawing different noise and a resumed run continues each rank's
    stream exactly.  When the checkpoint was written by a different number of processes (or by a library version that
    saved rank 0's state only), a rank without a saved state continues from rank 0's state reseeded by its rank: the
    ranks still differ, but that run is no longer bit-identical to an uninterrupted one (a warning says so)."""
    saved = int(meta.get("rng_world_size", 1))
    if saved != world_size:
        warnings.warn(f"the checkpoint's RNG states were saved by {saved} process(es) and this run has {world_size}: "
                      "the resumed run's random numbers will not continue those of the interrupted run exactly",
                      RuntimeWarning, stacklevel=3)
    if rank == 0:
        restore_rng_state(tensors, meta["rng"])
    elif str(rank) in meta.get("rng_ranks", {}):
        restore_rng_state(tensors, meta["rng_ranks"][str(rank)], prefix=f"rng.rank{rank}")
    else:
        restore_rng_state(tensors, meta["rng"])
        seed = int(torch.randint(0, 2 ** 62, ())) + rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)


# ----------------------------------------------------------------------------- files
def check_finite(tensors: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("model.", "ema.")) -> None:
    """Refuse to save a diverged model: every floating weight under ``prefixes`` must be finite."""
    for name, tensor in tensors.items():
        if name.startswith(prefixes) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"refusing to save non-finite weights ({name}); the model has diverged. "
                             "Load the last good checkpoint and lower the learning rate")


def write_training_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` with ``meta`` (JSON) into one safetensors file."""
    check_finite(tensors)
    header = dict(meta, format_version=CHECKPOINT_FORMAT_VERSION)
    path = Path(path)
    save_tensors(tensors, path, metadata={METADATA_KEY: json.dumps(header)})
    return path


def read_training_checkpoint(path: str | os.PathLike, kind: str,
                             device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`write_training_checkpoint` for a trainer of class ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with reading(path, "training checkpoint", fix="resume from an older copy, or start the run again"), \
            safe_open(str(path), framework="pt", device=str(device)) as handle:
        header = (handle.metadata() or {}).get(METADATA_KEY)
        if header is None:
            raise ValueError(f"{path} is a safetensors file but not a dalle2_pytorch training checkpoint "
                             f"(no {METADATA_KEY!r} metadata); use from_pretrained for model weights")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(header)
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path} has training-checkpoint format_version {version!r} (written by dalle2_pytorch "
                         f"{meta.get('library_version')!r}); this library reads version {CHECKPOINT_FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise ValueError(f"{path} is a {meta.get('kind')} checkpoint; it cannot be loaded into a {kind}")
    return tensors, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    with reading(path, "training checkpoint"), safe_open(str(path), framework="pt", device="cpu") as handle:
        header = (handle.metadata() or {}).get(METADATA_KEY)
    if header is None:
        raise ValueError(f"{path} is not a dalle2_pytorch training checkpoint")
    return json.loads(header)


def rebuild_model(path: str | os.PathLike, use_ema: bool = False):
    """Rebuild the trained model (a ``DiffusionPrior`` or ``Decoder``) from a training checkpoint.

    With ``use_ema`` the exponential-moving-average weights replace the online ones.
    """
    meta = read_checkpoint_meta(path)
    model_meta = meta["model"]
    model = resolve_class(model_meta["class"]).from_config(model_meta["config"])
    with reading(path, "training checkpoint"), safe_open(str(path), framework="pt", device="cpu") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    model.load_state_dict(unprefixed(tensors, "model"), strict=True)
    if use_ema:
        for part, module_path in meta["ema_targets"].items():
            target = model.get_submodule(module_path)
            ema_state = unprefixed(tensors, f"ema.{part}")
            target.load_state_dict(unprefixed(ema_state, "ema_model"), strict=True)
    return model



# ----------------------------------------------------------------------------- checkpoint folders
def save_checkpoint(directory: str | os.PathLike, trainer, counters: dict[str, Any],
                    with_training_state: bool = True, *, run_config: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder at ``directory`` (replacing any previous one atomically); returns its path.

    ``trainer`` is a :class:`~dalle2_pytorch.trainers.base.TrainerBase` whose model has ``save_pretrained``.  Every
    process of a distributed run calls it (the trainer's save waits for all); only the main process writes.
    ``run_config`` (the training config as JSON data) is kept beside the counters, so a resume can tell what changed."""
    directory = Path(directory)
    main = trainer.is_main_process
    staging = begin_folder(directory) if main else directory.parent / f".{directory.name}.partial"
    if trainer.is_sharded:  # FSDP: every process gathers the full weights, the main process writes them
        from dalle2_pytorch.serialization import save_pretrained_state

        state = trainer.full_state_dict()
        if main:
            save_pretrained_state(trainer.model, state, staging / "model")
        if trainer.has_ema:
            with trainer.ema_weights():
                state = trainer.full_state_dict()
            if main:
                save_pretrained_state(trainer.model, state, staging / "ema_model")
    elif main:
        trainer.model.save_pretrained(staging / "model")
        if trainer.has_ema:
            with trainer.ema_weights():
                trainer.model.save_pretrained(staging / "ema_model")
    if main:
        save_json({"counters": counters, **({} if run_config is None else {"config": run_config})},
                  staging / STATE_JSON)
    if with_training_state:
        trainer.save(staging / TRAINER_FILE)
    if main:
        commit_folder(staging, directory)
    return directory


def read_counters(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The counters of the checkpoint folder at ``directory``, or None when there is none."""
    recover_interrupted_swap(directory)
    path = Path(directory) / STATE_JSON
    return load_json(path)["counters"] if path.is_file() else None


def read_run_config(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The training config saved with the checkpoint folder at ``directory`` (None when it has none)."""
    recover_interrupted_swap(directory)
    path = Path(directory) / STATE_JSON
    return load_json(path).get("config") if path.is_file() else None


def load_checkpoint(directory: str | os.PathLike, trainer) -> dict[str, Any]:
    """Restore weights, optimisers, EMAs and RNG states of ``trainer`` from a checkpoint folder; returns the counters."""
    directory = Path(directory)
    recover_interrupted_swap(directory)
    if not (directory / STATE_JSON).is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint folder (no {STATE_JSON})")
    if not (directory / TRAINER_FILE).is_file():
        raise ValueError(f"{directory} holds weights only (a 'best' checkpoint); resume from 'latest'")
    trainer.load(directory / TRAINER_FILE)
    return load_json(directory / STATE_JSON)["counters"]

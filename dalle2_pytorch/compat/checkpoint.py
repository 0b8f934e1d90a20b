"""Reading the checkpoint files the reference DALLE2-pytorch wrote, in every layout LAION published.

* a bare ``state_dict()`` (``torch.save(model.state_dict())`` or ``.safetensors``);
* ``{"model": ...}`` (``DecoderTrainer.save``; its ``version`` is a plain string);
* ``{"ema_model": ..., "model": ..., "version": Version(...), ...}`` (``DiffusionPriorTrainer.save``
  in 0.15.x: ``ema_model`` holds the EMA weights, preferred unless ``use_ema=False``).

Files are read with ``torch.load(weights_only=True)``.  The only classes allowed through the
unpickler are the four ``packaging`` classes a pickled ``packaging.version.Version`` refers to;
nothing else in a file can run code.  The writing release, when the file records it, is returned
as a string (``Version`` objects are turned into their text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from dalle2_pytorch.errors import reading
from dalle2_pytorch.serialization import load_tensors


def _version_globals() -> list:
    """The classes a ``packaging.version.Version`` pickled by packaging 21-26 refers to (empty if absent)."""
    try:
        import packaging._structures as structures
        import packaging.version as version
    except ImportError:  # pragma: no cover - packaging ships with every pip/torch install
        return []
    names = [(version, "Version"), (version, "_Version"), (structures, "InfinityType"),
             (structures, "NegativeInfinityType")]
    return [getattr(module, name) for module, name in names if hasattr(module, name)]


@dataclass
class ReferenceCheckpoint:
    """A reference state dict and what the file said about it.

    ``entry`` is where the weights were: ``"ema_model"``, ``"model"`` or ``"<file>"``;
    ``saved_version`` the release string the trainer recorded (None for a bare state dict).
    """

    state: dict[str, torch.Tensor]
    entry: str
    saved_version: Optional[str] = None


def _load_pickle(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file holding other objects is refused (UnsafeFileError naming it)."""
    with torch.serialization.safe_globals(_version_globals()), reading(path, "checkpoint"):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _version_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return str(value)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_reference_checkpoint(path: str | Path, *, use_ema: bool = True) -> ReferenceCheckpoint:
    """The weights of a reference checkpoint in any of its published layouts (see the module doc).

    ``use_ema``: in a trainer save holding both, take ``ema_model`` (True, the default: the weights
    the trainer meant for sampling) or the online ``model`` (False).  The state is returned as
    stored (``clip.*`` keys included: the loaders decide what to do with them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        obj: Any = load_tensors(path)
    else:
        obj = _load_pickle(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict or a trainer save (found {type(obj).__name__})")
    saved_version = None
    if _is_state_dict(obj):
        entry, state = "<file>", obj
    else:
        saved_version = _version_text(obj.get("version"))
        if use_ema and "ema_model" in obj:
            entry = "ema_model"
        elif "model" in obj:
            entry = "model"
        else:
            wanted = "'ema_model' or 'model'" if use_ema else "'model' (use_ema=False)"
            raise ValueError(f"{path} is neither a state dict nor a trainer save with {wanted}; "
                             f"its top-level keys are {sorted(map(str, obj))[:10]}")
        state = obj[entry]
        if not _is_state_dict(state):
            raise ValueError(f"{path}[{entry!r}] is not a state dict of tensors")
    return ReferenceCheckpoint(state=dict(state), entry=entry, saved_version=saved_version)

"""What ``--resume`` accepts: a config may change how the run goes on (learning rate, run length, tracker, evaluation,
where checkpoints go) but not what the checkpoint means (the model, the data and its order, the batch, the seed)."""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional

# settings whose change makes the checkpoint mean something else (prefixes of dotted config paths)
FIXED = ("kind", "model", "data", "trainer.seed", "trainer.unet_numbers", "trainer.unet_steps",
         "trainer.gradient_accumulation")
# inside a fixed section, settings that only change how fast data is read
FREE_INSIDE_FIXED = ("data.num_workers",)


def config_leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) of a JSON-like config, in sorted order."""
    if isinstance(value, dict):
        for key in sorted(value):
            yield from config_leaves(value[key], f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _is_fixed(path: str) -> bool:
    def under(prefix: str) -> bool:
        return path == prefix or path.startswith(prefix + ".")

    return any(under(p) for p in FIXED) and not any(under(p) for p in FREE_INSIDE_FIXED)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changes that alter what the checkpoint means, changes that are allowed), each ``path: old -> new``.  A setting
    the saved config lacks and that is now off (None or false: a setting added by a later version, at its default)
    is no change, so checkpoints of older versions still resume."""
    old, new = dict(config_leaves(saved)), dict(config_leaves(current))
    fixed, allowed = [], []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path, "<unset>"), new.get(path, "<unset>")
        if before == "<unset>" and (after is None or after is False):
            continue
        if before != after:
            (fixed if _is_fixed(path) else allowed).append(f"{path}: {before!r} -> {after!r}")
    return fixed, allowed


def report_config_changes(saved: Optional[dict[str, Any]], current: dict[str, Any],
                          checkpoint: str | os.PathLike) -> list[str]:
    """Raise one error listing every change that alters what the checkpoint means; return the allowed ones (the run
    logs them with its resume marker).  A checkpoint saved without its config (older versions) is not checked."""
    if saved is None:
        return []
    fixed, allowed = config_changes(saved, current)
    if fixed:
        raise ValueError(f"--resume: this config changes what the checkpoint at {checkpoint} means; resume with the "
                         "config it was trained with, or start a new run (another checkpointing.directory). "
                         "Changed:\n  " + "\n  ".join(fixed))
    return allowed

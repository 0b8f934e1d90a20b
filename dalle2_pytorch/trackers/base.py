"""The tracker interface, the console tracker, the local JSONL metrics log, and a group that fans out to many."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from dalle2_pytorch.images import save_captioned_grid


def _plain(value: Any) -> Any:
    """A JSON-friendly number/str from tensors and numbers; non-finite floats become strings."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Tracker:
    """Receives metrics and images of a run.  Subclasses override what they support; the rest is a no-op."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def resumed(self, step: int, changes: Sequence[str] = ()) -> None:
        """The run continues from a checkpoint taken at ``step`` (whatever was logged after it will be logged again),
        with the config ``changes`` (``path: old -> new``) allowed on a resume."""

    def close(self) -> None:
        pass


class ConsoleTracker(Tracker):
    """Prints metrics every ``every`` calls (through ``write``, tqdm-safe by default)."""

    def __init__(self, *, every: int = 1, write: Callable[[str], None] | None = None) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        from tqdm.auto import tqdm

        self.every, self.write, self._calls = every, write or tqdm.write, 0

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._calls += 1
        if self._calls % self.every:
            return
        parts = []
        for key, value in metrics.items():
            value = _plain(value)
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        self.write(f"step {step}: " + " ".join(parts))

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        self.write(f"step {step}: {name}: {len(images)} images")

    def resumed(self, step: int, changes: Sequence[str] = ()) -> None:
        self.write(f"resumed from the checkpoint of step {step}" + (f"; changed: {'; '.join(changes)}" if changes
                                                                    else ""))


class JsonlTracker(Tracker):
    """Appends one JSON object per ``log`` call to ``<directory>/metrics.jsonl``; image grids go to
    ``<directory>/images/<name>_<step>.png`` and are listed in the log.

    On a resume (:meth:`resumed`) the lines of steps after the checkpoint (logged by the interrupted run, about to be
    run again) are dropped and a line ``{"event": "resume", "step": <checkpoint step>, ...}`` marks the resume, so
    every step appears once."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "metrics.jsonl"
        self._handle = open(self.path, "a", encoding="utf-8")

    def _write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._write({"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}})

    def log_images(self, name: str, images: torch.Tensor, captions: Sequence[str], step: int) -> None:
        path = save_captioned_grid(images, list(captions), self.directory / "images" / f"{name}_{step:08d}.png")
        self._write({"step": step, "time": round(time.time(), 3), "image": name, "path": str(path)})

    def resumed(self, step: int, changes: Sequence[str] = ()) -> None:
        from dalle2_pytorch.atomic import atomic_write_bytes

        self._handle.close()
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                dropped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
                dropped += 1
                continue
            kept.append(line + "\n")
        atomic_write_bytes(self.path, "".join(kept).encode("utf-8"))
        self._handle = open(self.path, "a", encoding="utf-8")
        self._write({"event": "resume", "step": step, "time": round(time.time(), 3), "dropped_lines": dropped,
                     "config_changes": list(changes)})

    def log_config(self, config: Mapping[str, Any]) -> None:
        (self.directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class TrackerGroup(Tracker):
    """Sends every call to each of ``trackers`` in order."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log(self, metrics, step):
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def log_images(self, name, images, captions, step):
        for tracker in self.trackers:
            tracker.log_images(name, images, captions, step)

    def log_config(self, config):
        for tracker in self.trackers:
            tracker.log_config(config)

    def resumed(self, step, changes=()):
        for tracker in self.trackers:
            tracker.resumed(step, changes)

    def close(self):
        for tracker in self.trackers:
            tracker.close()

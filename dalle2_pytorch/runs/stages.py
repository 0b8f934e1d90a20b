"""Stages of a whole-pipeline run (CLIP, prior, decoder), shared by ``dalle2 demo`` and ``dalle2 train pipeline``.

A stage is trained by the config-driven :class:`~dalle2_pytorch.runs.loop.TrainingRun` in its run folder
``<out>/training/<stage>``, then saved with ``save_pretrained`` in its own folder together with a marker file
(``demo_stage.json``) holding a fingerprint of everything the model depends on.  A rerun whose fingerprint matches
reuses the saved model instead of training again; ``resume=True`` continues an interrupted stage from the latest
checkpoint of its run folder (when that run was started with the same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.pipeline_files import LEGACY_SAMPLING_FILE
from dalle2_pytorch.runs.config_base import validate_config
from dalle2_pytorch.runs.configs import config_class
from dalle2_pytorch.serialization import load_json, save_json

MARKER = "demo_stage.json"          # beside a saved stage model: its fingerprint and training time
RUN_MARKER = "stage_fingerprint.json"   # in a stage's run folder: which fingerprint the run trains


def fingerprint(*parts: Any) -> str:
    """Hash of what a stage's checkpoint depends on (its config without run folders): a rerun reuses it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def model_part(data: dict[str, Any]) -> dict[str, Any]:
    """A stage config without the sections that do not change the trained model (where it is saved, logging)."""
    return {k: v for k, v in data.items() if k not in ("checkpointing", "tracker")}


def train_stage(stage: str, data: dict[str, Any], out: Path, *, clip_dir: Optional[Path] = None,
                show_progress: bool = True, save_every: int = 10 ** 9, resume_print: Optional[str] = None):
    """Train one stage with :class:`TrainingRun` (run folder ``<out>/training/<stage>``) and return the model.

    The run is quiet apart from its progress bar (metrics go to the run folder's logs) and saves its latest
    checkpoint every ``save_every`` steps and at the end; a prior or decoder is given the CLIP saved at ``clip_dir``.
    ``resume_print``: continue the run folder's latest checkpoint when its run trained this fingerprint (else the
    run starts afresh)."""
    from dalle2_pytorch.runs.loop import TrainingRun
    from dalle2_pytorch.trainers.checkpoint import read_counters

    data = json.loads(json.dumps(data))  # a copy
    run_dir = out / "training" / stage
    marker = run_dir / RUN_MARKER
    resume = (resume_print is not None and marker.is_file() and load_json(marker).get("fingerprint") == resume_print
              and read_counters(run_dir / "latest") is not None)
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # an earlier run of other settings: this one starts afresh
    data["checkpointing"] = {**data.get("checkpointing", {}), "directory": str(run_dir), "save_every": save_every,
                             "copy_to": None, "hf_repo": None}
    data["tracker"] = {"console": False, "jsonl": True}
    if clip_dir is not None:
        data["model"]["clip"] = {"kind": "builtin", "path": str(clip_dir)}
    run = TrainingRun(validate_config(config_class(stage), data, f"{stage} stage config"), resume=resume,
                      show_progress=show_progress)
    if resume_print is not None:
        save_json({"fingerprint": resume_print}, marker)
    run.run()
    with run.trainer.ema_weights():  # the EMA weights when the config keeps an EMA
        state = {k: v.clone() for k, v in run.model.state_dict().items()}
    model = run.model
    model.load_state_dict(state)
    return model.eval()


def load_or_train(stage: str, directory: Path, stage_print: str, cls, train: Callable[[], torch.nn.Module],
                  say: Callable[[str], None]):
    """The model saved in ``directory`` when its marker holds ``stage_print``; otherwise ``train()`` it and save it."""
    marker = directory / MARKER
    if marker.is_file() and load_json(marker).get("fingerprint") == stage_print:
        say(f"reusing {stage} from {directory}")
        return cls.from_pretrained(directory).eval()
    started = time.perf_counter()
    model = train()
    model.save_pretrained(directory)
    save_json({"fingerprint": stage_print, "seconds": round(time.perf_counter() - started, 1)}, marker)
    return model


def forget_stages(directories: list[Path]) -> None:
    """Make the next run retrain these stages (their saved models stay until replaced)."""
    for directory in directories:
        (directory / MARKER).unlink(missing_ok=True)


def sampling_settings(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pipeline's sampling settings: each stage config's evaluation sampler, steps and guidance scale."""
    settings = {}
    for stage in ("prior", "decoder"):
        evaluation = validate_config(config_class(stage), stages[stage]).evaluation
        settings[stage] = {"sampler": evaluation.sampler, "steps": evaluation.sample_steps,
                           "cond_scale": evaluation.cond_scale}
    return settings


def save_pipeline(pipeline: DALLE2, checkpoints: Path) -> Path:
    """The final save: ``DALLE2.save_pretrained`` over the trained stages (``prior/`` and ``decoder/`` rewritten in
    place, ``clip/`` and the stage markers kept), with the sampling defaults in ``pipeline.json`` — the one pipeline
    layout that `dalle2 sample`, `dalle2 serve` and `dalle2 eval` read."""
    (checkpoints / LEGACY_SAMPLING_FILE).unlink(missing_ok=True)   # an older demo's settings; pipeline.json replaces them
    return pipeline.save_pretrained(checkpoints)


class Threads:
    """``with Threads(n):`` runs its body with ``n`` torch CPU threads and restores the previous count."""

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads={threads!r}: expected a positive int")
        self.threads = threads
        self.previous = torch.get_num_threads()

    def __enter__(self) -> "Threads":
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.previous)

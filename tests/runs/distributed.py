"""Helpers for tests that start ``dalle2 train`` under torchrun with two CPU processes (gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def torchrun_command() -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed beside this Python")
    return ["nice", "-n", "10", str(torchrun if torchrun.exists() else "torchrun")]


def accelerate_command() -> list[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate's command is not installed beside this Python")
    return ["nice", "-n", "10", str(accelerate), "launch"]


def train_two_processes(out: Path, kind: str, config: dict, *, resume: bool = False, kill_at: int | None = None,
                        timeout: int = 600, launcher: list[str] | None = None,
                        environment: dict[str, str | None] | None = None,
                        worker: str = "tests.runs.multiprocess_worker") -> subprocess.CompletedProcess:
    """``dalle2 train KIND --config <config>`` under ``torchrun --nproc_per_node 2`` or the ``launcher`` command given
    (each rank writes the samples it trained on to ``out/rank<r>.json``); with ``kill_at`` every rank dies just before
    that step.  ``environment``: variables to set (None: to unset) on top of ``ACCELERATE_USE_CPU=true``; ``worker``:
    the module each rank runs (multiprocess_worker's arguments)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("KILL_AT_STEP", None)
    if kill_at is not None:
        env["KILL_AT_STEP"] = str(kill_at)
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    launcher = launcher or torchrun_command() + ["--standalone", "--nproc_per_node", "2"]
    command = launcher + ["-m", worker, str(out), "train", kind, "--config", str(path)]
    process = subprocess.Popen(command + (["--resume"] if resume else []), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_with_children(process.pid)   # the launchers start each rank in a session of its own
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill_with_children(pid: int) -> None:
    """SIGKILL a hung launcher and every process under it, so no rank lives on after its test."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def logged(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "logs" / "metrics.jsonl").read_text().splitlines()]


def run_worker_module(module: str, folder: Path, done_marker: str, timeout: int) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 -m MODULE FOLDER`` with one torch thread per
    process; asserts it exits 0 and printed ``done_marker`` (the worker's own end-of-checks line)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module,
         str(folder)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert done_marker in result.stdout

"""`accelerate launch` on CPUs: the command that starts several gloo processes, and the two that do not (one warns,
one is refused), as run by accelerate's own launcher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dalle2_pytorch.runs.launch_check import check_launch, dropped_engine_warning, single_process_launch_warning
from .distributed import accelerate_command, train_two_processes

ROOT = Path(__file__).resolve().parents[2]
# every setting given, so accelerate neither reads a user's `accelerate config` file nor prints its defaults notice
SETTINGS = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
# what `accelerate launch --cpu --num_processes 2` (accelerate 1.15) puts in the environment of the one process
CPU_LAUNCH = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
              "ACCELERATE_DYNAMO_BACKEND": "NO", "ACCELERATE_DYNAMO_MODE": "default",
              "ACCELERATE_MIXED_PRECISION": "no", "KMP_BLOCKTIME": "1"}


def tiny_clip(directory: Path) -> dict:
    config = json.loads((ROOT / "configs" / "toy_clip.json").read_text())
    config["model"].update(dim_text=16, dim_image=16, dim_latent=8, text_enc_depth=1, visual_enc_depth=1,
                           text_dim_head=8, visual_dim_head=8, visual_image_size=16, visual_patch_size=8)
    config["data"].update(num_samples=40, image_size=16, batch_size=4, val_fraction=0.2, batches="shuffled")
    config["trainer"].update(epochs=1, max_steps=None)
    config["evaluation"].update(validate_every=0, validation_batches=1)
    config["tracker"] = {"console": False}
    config["checkpointing"].update(directory=str(directory), save_every=100)
    return config


def summary(result) -> dict:
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout[-2000:]
    return lines[0]


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_with_use_cpu_starts_two_gloo_processes(tmp_path):
    """``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2``: accelerate's torch launcher starts
    two processes that accelerate joins with gloo; they train disjoint halves of the epoch and both RNG states are
    saved."""
    launcher = accelerate_command() + ["--multi_gpu", "--num_processes", "2"] + SETTINGS
    result = train_two_processes(tmp_path, "clip", tiny_clip(tmp_path / "run"), launcher=launcher, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 16 and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(8, 40))
    assert summary(result)["step"] == 4 and summary(result)["samples_seen"] == 32
    with safe_open(str(tmp_path / "run" / "latest" / "trainer.safetensors"), "pt") as saved:
        state = json.loads(saved.metadata()["dalle2_pytorch_training_state"])
        assert state["rng_world_size"] == 2 and "rng.rank1.torch" in saved.keys()


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_trains_in_one_and_warns(tmp_path):
    """``accelerate launch --cpu --num_processes 2`` starts one process: the run trains the whole epoch alone and says
    which command starts two."""
    launcher = accelerate_command() + ["--cpu", "--num_processes", "2"] + SETTINGS
    result = train_two_processes(tmp_path, "clip", tiny_clip(tmp_path / "run"), launcher=launcher, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result)["step"] == 8 and summary(result)["samples_seen"] == 32
    assert result.stderr.count("started only this one process") == 1
    assert "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with GPUs accelerate joins these processes")
def test_accelerate_launch_multi_gpu_without_gpus_or_use_cpu_is_refused(tmp_path):
    """Without ``ACCELERATE_USE_CPU`` and without GPUs, accelerate makes each of the two processes a lone one: both
    would train alone into one checkpoint folder, so both stop with the command to use."""
    launcher = accelerate_command() + ["--multi_gpu", "--num_processes", "2"] + SETTINGS
    result = train_two_processes(tmp_path, "clip", tiny_clip(tmp_path / "run"), launcher=launcher, timeout=300,
                                 environment={"ACCELERATE_USE_CPU": None})
    assert result.returncode != 0
    assert result.stderr.count("started WORLD_SIZE=2 processes but accelerate set this one up as a lone") == 2
    assert not (tmp_path / "run" / "latest").exists()


def test_the_single_process_trace_of_accelerate_cpu_launch_is_recognised():
    assert "started only this one process" in single_process_launch_warning(1, CPU_LAUNCH)
    assert single_process_launch_warning(2, CPU_LAUNCH) is None          # several processes: nothing to say
    for name in ("MASTER_ADDR", "ACCELERATE_USE_CPU", "ACCELERATE_DYNAMO_BACKEND"):   # `--cpu` alone / plain python
        assert single_process_launch_warning(1, {k: v for k, v in CPU_LAUNCH.items() if k != name}) is None
    assert single_process_launch_warning(1, {**CPU_LAUNCH, "ACCELERATE_USE_CPU": "False"}) is None
    assert single_process_launch_warning(1, {**CPU_LAUNCH, "WORLD_SIZE": "1"}) is None    # torchrun --nproc 1
    assert single_process_launch_warning(1, {**CPU_LAUNCH, "OMPI_COMM_WORLD_SIZE": "1"}) is None   # mpirun
    with pytest.warns(RuntimeWarning, match="To train in N CPU processes run: ACCELERATE_USE_CPU=true"):
        check_launch(1, CPU_LAUNCH)


def test_processes_that_accelerate_did_not_join_are_refused():
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 processes but accelerate set this one up as a lone"):
        check_launch(1, {"WORLD_SIZE": "2", "RANK": "1"})
    check_launch(2, {"WORLD_SIZE": "2", "RANK": "1"})
    check_launch(1, {"WORLD_SIZE": "1"})


@pytest.mark.parametrize("variable, engine", [("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"), ("ACCELERATE_USE_FSDP", "FSDP")])
def test_a_deepspeed_or_fsdp_launch_that_accelerate_dropped_on_cpus_is_said(variable, engine):
    """What `accelerate launch --use_deepspeed` / `--use_fsdp` sets, with ACCELERATE_USE_CPU: accelerate 1.15 sets
    the run up without the engine (checked here in a fresh process), and the run says so."""
    script = "from accelerate import Accelerator; print(Accelerator().distributed_type.name)"
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", variable: "true"}
    accelerate_says = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                                     timeout=120, cwd=ROOT)
    distributed_type = accelerate_says.stdout.strip().splitlines()[-1]
    assert distributed_type != engine, accelerate_says.stdout
    with pytest.warns(RuntimeWarning, match=f"asked for {engine} .* training goes on without {engine}"):
        check_launch(1, {variable: "true"}, distributed_type=distributed_type)
    assert dropped_engine_warning(engine, {variable: "true"}) is None       # turned on: nothing to say
    assert dropped_engine_warning(distributed_type, {variable: "false"}) is None

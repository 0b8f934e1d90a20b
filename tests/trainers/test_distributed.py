"""Two CPU processes (gloo): training one unet of a cascade keeps every process's weights identical."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainers.checkpoint_worker import make_trainers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_average_gradients_of_the_trained_unet(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tests.trainers.ddp_worker", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "DDP_OK" in result.stdout
    decoder, _ = make_trainers()
    decoder.load(tmp_path / "ddp.safetensors", only_model=True)  # written once, by the main process

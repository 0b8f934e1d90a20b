"""The training loop under two processes (torchrun + accelerate on CPU, gloo): each rank trains on its own half
of every batch of samples, and the run counts both."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_cpu_processes_share_the_data(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed beside this Python")
    config = json.loads((ROOT / "configs" / "toy_clip.json").read_text())
    config["model"].update(dim_text=16, dim_image=16, dim_latent=8, text_enc_depth=1, visual_enc_depth=1,
                           text_dim_head=8, visual_dim_head=8, visual_image_size=16, visual_patch_size=8)
    config["data"].update(num_samples=100, image_size=16, batch_size=4, batches="shuffled")
    config["trainer"]["max_steps"] = 3
    config["evaluation"].update(validate_every=0, validation_batches=1)
    config["tracker"] = {"console": False}
    config["checkpointing"].update(directory=str(tmp_path / "run"), save_every=3)
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([str(torchrun if torchrun.exists() else "torchrun"), "--nproc_per_node", "2",
                             "-m", "dalle2_pytorch.cli.main", "train", "clip", "--config", str(path)],
                            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only the main process reports
    assert summaries[0]["step"] == 3 and summaries[0]["samples_seen"] == 3 * 4 * 2
    assert (tmp_path / "run" / "latest" / "model" / "model.safetensors").is_file()

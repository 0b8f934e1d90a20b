"""The training loop under two processes (torchrun + accelerate on CPU, gloo): each rank trains on its own half
of every epoch, and the run counts both."""

import json
from pathlib import Path

import pytest

from .distributed import train_two_processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_cpu_processes_share_the_data(tmp_path):
    """``dalle2 train`` under torchrun: the two ranks train on disjoint halves of the epoch that together cover every
    training sample, and the main process alone reports the samples both read."""
    config = json.loads((ROOT / "configs" / "toy_clip.json").read_text())
    config["model"].update(dim_text=16, dim_image=16, dim_latent=8, text_enc_depth=1, visual_enc_depth=1,
                           text_dim_head=8, visual_dim_head=8, visual_image_size=16, visual_patch_size=8)
    config["data"].update(num_samples=40, image_size=16, batch_size=4, val_fraction=0.2,
                          batches="shuffled")  # 32 training samples
    config["trainer"].update(epochs=1, max_steps=None)   # 32 / (4 x 2) = 4 steps: one whole epoch
    config["evaluation"].update(validate_every=0, validation_batches=1)
    config["tracker"] = {"console": False}
    config["checkpointing"].update(directory=str(tmp_path / "run"), save_every=4)
    result = train_two_processes(tmp_path, "clip", config)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only the main process reports
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 16
    assert not set(seen[0]) & set(seen[1])                       # disjoint
    assert sorted(seen[0] + seen[1]) == list(range(8, 40))       # covering every training sample once
    assert summaries[0]["step"] == 4 and summaries[0]["samples_seen"] == len(seen[0]) + len(seen[1])
    assert (tmp_path / "run" / "latest" / "model" / "model.safetensors").is_file()

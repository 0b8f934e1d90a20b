"""The CPU recipes in configs/ are the `dalle2 train pipeline` small preset's decoder (so they never drift), and the
threads benchmark script runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dalle2_pytorch.runs.configs import load_train_config
from dalle2_pytorch.runs.pipeline_presets import decoder_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", [32, 64])
def test_cpu_decoder_recipes_are_the_small_preset(size):
    path = ROOT / "configs" / f"decoder_cpu_{size}.json"
    recipe = json.loads(path.read_text())
    expected = decoder_config("small", size, recipe["data"]["path"], 2304)
    assert {k: v for k, v in recipe.items() if k != "checkpointing"} == \
        {**expected, "model": {**expected["model"], "clip": recipe["model"]["clip"]}}
    config = load_train_config(path)
    assert config.model.image_sizes[-1] == size and not config.model.unconditional
    assert all(unet.image_embed_dim == 32 for unet in config.model.unet)   # conditioned on CLIP image embeddings


def test_threads_benchmark_runs_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threads_cost.py"), "--quick"], env=env,
                         check=True, capture_output=True, text=True, timeout=600).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["model"], r["threads"]) for r in rows] == [("clip", 1), ("decoder", 1)]
    assert all(r["cpu_s_per_step"] > 0 for r in rows)

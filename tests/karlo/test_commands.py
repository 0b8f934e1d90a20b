"""`dalle2 sample`, `dalle2 serve` (its engine and HTTP API) and `dalle2 eval` take a Karlo folder as --checkpoint."""

import numpy as np
import pytest
import torch
from PIL import Image

import dalle2_pytorch.karlo.pipeline as karlo_pipeline_module
from dalle2_pytorch.cli.main import main
from dalle2_pytorch.images import save_image
from dalle2_pytorch.karlo import KarloPipeline
from dalle2_pytorch.pipeline_files import SamplingDefaults

FAST = SamplingDefaults(prior_sampler="ddim", prior_steps=3, prior_cond_scale=4.0, sampler=("ddim", "ddim"),
                        steps=(3, 2), cond_scale=(8.0, 1.0))


@pytest.fixture
def fast_defaults(monkeypatch):
    """Loaded Karlo pipelines default to a few DDIM steps instead of Karlo's 25 + 25 + 7 DDPM steps."""
    monkeypatch.setattr(karlo_pipeline_module, "KARLO_DEFAULTS", FAST)


def test_sample_command_writes_the_pipelines_images(karlo_folder, tmp_path, fast_defaults):
    out = tmp_path / "out"
    assert main(["sample", "a red cat", "--checkpoint", str(karlo_folder), "--num-images", "2", "--seed", "7",
                 "--out", str(out), "--sampler", "dpmpp_2m", "--steps", "4", "--cond-scale", "3"]) == 0
    written = [np.asarray(Image.open(path)) for path in sorted(out.glob("*_a_red_cat.png"))]
    assert len(written) == 2 and (out / "grid.png").is_file() and written[0].shape == (16, 16, 3)
    pipe = KarloPipeline.from_pretrained(karlo_folder)
    images = pipe(["a red cat"] * 2, generator=torch.Generator().manual_seed(7), sampler="dpmpp_2m", steps=4,
                  cond_scale=[3.0, 1.0])
    expected = [np.asarray(Image.open(save_image(image, tmp_path / f"{i}.png"))) for i, image in enumerate(images)]
    assert all(np.array_equal(a, b) for a, b in zip(written, expected))


def test_serve_engine_and_api_generate_karlo_images(karlo_folder, fast_defaults):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from dalle2_pytorch.serve.app import create_app
    from dalle2_pytorch.serve.engine import DALLE2Engine, Settings
    from tests.serve.conftest import wait_for

    engine = DALLE2Engine.from_checkpoint(karlo_folder)
    facts = engine.describe()
    assert facts["image_size"] == 16 and facts["num_unets"] == 2 and facts["max_steps"] == 1000
    assert facts["defaults"]["cond_scale"] == 8.0 and facts["prior_guidance"]
    progress = []
    images = engine.generate(["a red cat", "a dog"], [1, 2], Settings(steps=2, cond_scale=2.0), progress.append)
    assert [image.size for image in images] == [(16, 16)] * 2 and progress[-1] == 1.0
    alone = engine.generate(["a dog"], [2], Settings(steps=2, cond_scale=2.0))[0]
    assert np.abs(np.asarray(alone, dtype=int) - np.asarray(images[1], dtype=int)).max() <= 1  # own seed, own noise
    with TestClient(create_app(engine)) as client:
        job = client.post("/v1/generate", json={"prompt": "a red cat", "steps": 2, "seed": 3}).json()
        done = wait_for(client, job["id"], timeout=120)
        assert done["status"] == "done", done
        assert client.get(done["images"][0]["url"]).headers["content-type"] == "image/png"


def test_eval_command_scores_a_karlo_folder_without_clip_metrics(karlo_folder, tmp_path, fast_defaults, capsys):
    out = tmp_path / "metrics.json"
    assert main(["eval", "--checkpoint", str(karlo_folder), "--images-per-caption", "1", "--num-real-images", "8",
                 "--out", str(out)]) == 0
    metrics = __import__("json").loads(out.read_text())
    assert metrics["num_images"] == 18 and np.isfinite(metrics["fid"]) and 0 <= metrics["faithfulness"] <= 1
    assert "clip_score" not in metrics  # Karlo's folder has no CLIP image encoder
    assert main(["eval", "--checkpoint", str(karlo_folder), "--features", "clip"]) == 2
    assert "CLIP image encoder" in capsys.readouterr().err

"""The model adapter, checkpoint loading and serve_main's wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from dalle2_pytorch.dalle2 import SamplingDefaults
from dalle2_pytorch.serve.engine import DALLE2Engine, Settings
from dalle2_pytorch.serve.server import serve_main
from tests.serve.conftest import wait_for
from tests.serve.tiny_model import (FAST_SAMPLING, save_as_demo_layout, save_as_first_dalle2_layout,
                                    save_tiny_checkpoint, tiny_dalle2)


def test_engine_images_depend_only_on_prompt_seed_and_settings(engine):
    settings = Settings(sampler="ddpm", steps=3)
    alone = engine.generate(["a red circle"], [11], settings)
    fractions = []
    batch = engine.generate(["a blue square", "a red circle"], [3, 11], settings, progress=fractions.append)
    assert np.array_equal(np.asarray(alone[0]), np.asarray(batch[1]))
    assert not np.array_equal(np.asarray(batch[0]), np.asarray(batch[1]))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 3


def test_engine_checks_settings_against_the_model(engine):
    assert engine.check(Settings(steps=50, cond_scale=3.0)) == []
    assert [field for field, _ in engine.check(Settings(steps=51))] == ["steps"]
    unguided = tiny_dalle2()
    unguided.decoder.can_classifier_guidance = False
    problems = DALLE2Engine(unguided).check(Settings(cond_scale=2.0))
    assert problems and problems[0][0] == "cond_scale" and "guidance" in problems[0][1]


def test_checkpoint_in_each_older_layout_loads_with_its_settings(tmp_path):
    model = tiny_dalle2()
    demo = save_as_demo_layout(model, tmp_path / "demo", sampling=FAST_SAMPLING)
    engine = DALLE2Engine.from_checkpoint(demo, device="cpu")
    assert engine.describe()["image_size"] == 16
    assert engine.describe()["defaults"] == {"cond_scale": 2.0, "prior_cond_scale": 1.0, "sampler": "ddim",
                                             "steps": 4}
    bare = save_as_demo_layout(model, tmp_path / "bare", sampling=None)
    assert DALLE2Engine.from_checkpoint(bare).describe()["defaults"]["sampler"] is None
    first = save_as_first_dalle2_layout(model, tmp_path / "first")
    assert DALLE2Engine.from_checkpoint(first).defaults == SamplingDefaults()
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        DALLE2Engine.from_checkpoint(tmp_path / "missing")


def test_requests_without_settings_use_the_defaults_in_pipeline_json(tmp_path):
    """Editing pipeline.json's defaults changes what a request that leaves them out draws."""
    directory = save_tiny_checkpoint(tmp_path / "dalle2")
    default = DALLE2Engine.from_checkpoint(directory).generate(["a red circle"], [5], Settings())
    explicit = DALLE2Engine.from_checkpoint(directory).generate(["a red circle"], [5], Settings(steps=4,
                                                                                                sampler="ddim"))
    assert np.array_equal(np.asarray(default[0]), np.asarray(explicit[0]))

    spec = json.loads((directory / "pipeline.json").read_text())
    spec["sampling"]["decoder"].update(steps=[2, 2], sampler="euler")
    (directory / "pipeline.json").write_text(json.dumps(spec))
    engine = DALLE2Engine.from_checkpoint(directory)
    assert engine.describe()["defaults"]["steps"] == 2 and engine.describe()["defaults"]["sampler"] == "euler"
    edited = engine.generate(["a red circle"], [5], Settings())
    assert not np.array_equal(np.asarray(default[0]), np.asarray(edited[0]))
    overridden = engine.generate(["a red circle"], [5], Settings(steps=4, sampler="ddim"))
    assert np.array_equal(np.asarray(default[0]), np.asarray(overridden[0]))


def test_engine_defaults_argument_replaces_the_pipelines(engine):
    model = tiny_dalle2()
    wrapped = DALLE2Engine(model, defaults={"decoder": {"steps": 3, "cond_scale": [1.5, 1.0]}})
    assert model.sampling_defaults == SamplingDefaults(steps=3, cond_scale=(1.5, 1.0))
    assert wrapped.describe()["defaults"] == {"cond_scale": 1.5, "prior_cond_scale": 1.0, "sampler": None,
                                              "steps": 3}
    # a request's cond_scale replaces unet 1's; the upsampler keeps its default
    assert wrapped._overrides(Settings(cond_scale=4.0))["cond_scale"] == [4.0, 1.0]
    with pytest.raises(ValueError, match="2 unets"):
        DALLE2Engine(model, defaults={"decoder": {"steps": [1, 2, 3]}})


def test_a_failing_model_fails_the_job_and_the_server_keeps_serving(make_client, engine, monkeypatch):
    client = make_client()
    real_generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    failed = wait_for(client, client.post("/v1/generate", json={"prompt": "a red circle"}).json()["id"])
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    monkeypatch.setattr(engine, "generate", real_generate)
    recovered = wait_for(client, client.post("/v1/generate", json={"prompt": "a red circle"}).json()["id"])
    assert recovered["status"] == "done"


def test_serve_main_loads_the_checkpoint_and_runs_uvicorn(checkpoint, monkeypatch):
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: calls.update(app=app, host=host, port=port))
    serve_main(checkpoint, host="127.0.0.1", port=7861, max_batch=2, threads=torch.get_num_threads())
    assert (calls["host"], calls["port"]) == ("127.0.0.1", 7861)
    with TestClient(calls["app"], base_url="http://127.0.0.1:7861") as client:  # a Host it is bound to
        assert client.get("/v1/health").json()["queue"]["max_batch"] == 2
    with TestClient(calls["app"]) as client:  # "testserver": not a name this server answers to
        assert client.get("/v1/health").status_code == 400
    for bad in ({"port": 70000}, {"port": "80"}, {"threads": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            serve_main(checkpoint, **bad)

"""benchmarks/serve_load.py --quick, on the built-in model and on a trained `dalle2 demo` pipeline (tiny preset)."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def serve_load():
    pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
    return load_benchmark("serve_load")


@pytest.mark.slow
def test_quick_serves_the_trained_demo_at_its_defaults(serve_load, tmp_path):
    out = tmp_path / "load.json"
    assert serve_load.main(["--quick", "--demo", "tiny", "--demo-dir", str(tmp_path / "demo"),
                            "--json-out", str(out)]) == 0
    assert (tmp_path / "demo" / "checkpoints" / "pipeline.json").is_file()  # trained by `dalle2 demo`'s code
    saved = json.loads(out.read_text())
    assert saved["args"]["checkpoint"] == str(tmp_path / "demo" / "checkpoints")
    # the tiny demo's saved sampling settings (configs/toy_tiny_decoder.json's evaluation section), not ours
    assert saved["model"]["defaults"]["sampler"] == "ddim" and saved["model"]["defaults"]["steps"] == 4
    assert saved["model"]["image_size"] == 16  # the tiny decoder's image_sizes [8, 16]
    assert [(r["batching"], r["clients"]) for r in saved["rows"]] == [("on", 1), ("on", 3), ("off", 1), ("off", 3)]
    assert all(r["requests"] == r["clients"] and r["p95_s"] >= r["p50_s"] > 0 and r["cpu_s_per_request"] > 0
               for r in saved["rows"])
    assert all(r["load_avg_1min_after"] >= 0 for r in saved["rows"]) and saved["load_avg_1min_before"] >= 0


def test_checkpoint_and_demo_are_exclusive(serve_load, capsys):
    with pytest.raises(SystemExit):
        serve_load.main(["--demo", "tiny", "--checkpoint", "somewhere"])
    assert "give --checkpoint or --demo, not both" in capsys.readouterr().err

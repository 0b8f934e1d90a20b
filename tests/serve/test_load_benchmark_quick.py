"""Keeps benchmarks/serve_load.py from rotting: one tiny cell per mode, in process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


@pytest.mark.slow
def test_serve_load_benchmark_runs_and_reports_every_cell(tmp_path):
    pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "load.json"
    assert module.main(["--image-size", "16", "--steps", "2", "--requests-per-client", "1", "--concurrency", "1", "3",
                        "--threads", "1", "--json-out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batching"], r["clients"]) for r in rows] == [("on", 1), ("on", 3), ("off", 1), ("off", 3)]
    assert all(r["requests"] == r["clients"] and r["requests_per_s"] > 0 for r in rows)
    assert all(r["images_per_forward_pass"] == 1.0 for r in rows if r["batching"] == "off")

"""Keeps benchmarks/karlo.py from rotting: its --quick run times two schedules and estimates real-size FLOPs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_karlo_benchmark_quick(tmp_path):
    out = tmp_path / "karlo.json"
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "karlo.py"), "--quick", "--out", str(out)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-4000:]
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert [row["evaluations"] for row in rows] == [[50, 50, 7], [50, 50, 7], [40, 40, 7]]
    assert rows[0]["real_size_tflop_per_image"] > rows[2]["real_size_tflop_per_image"] > 0
    assert all(row["wall_s"] > 0 for row in rows) and "| ours, DPM-Solver++(2M) 20 + 20 + 7 |" in completed.stdout
    assert payload["real_size_flops"]["params"]["prior"] > 1e9  # Karlo's 1 B-parameter prior

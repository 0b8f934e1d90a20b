"""Keeps benchmarks/vae_train_step.py from rotting: its --quick mode must run and print a timing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_vae_train_step_benchmark_quick_runs():
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "vae_train_step.py"), "--quick", "--threads", "1",
         "--steps", "2"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "ms/step" in completed.stdout

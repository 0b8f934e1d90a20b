"""Keeps benchmarks/clip_train_step.py from rotting: its --quick mode runs and reports a step time."""

import os
import re
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "benchmarks", "clip_train_step.py")


@pytest.mark.slow
def test_clip_train_step_quick_runs():
    done = subprocess.run([sys.executable, SCRIPT, "--quick", "--steps", "1", "--options"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"median \d+\.\d+ s", done.stdout), done.stdout

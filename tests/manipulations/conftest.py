"""A trained toy pipeline (``dalle2 demo --preset small``: about 270 s of CPU), trained once and cached.

The cache folder is ``$DALLE2_TOY_CACHE`` or ``<tmp>/dalle2-toy-small``; the demo reuses every stage whose config
has not changed, so later sessions only load it.  Training runs under ``nice`` in a child process; a file lock
keeps two pytest workers from training at once."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from dalle2_pytorch.data.toy import ShapeSpec, render_shape

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_pipeline():
    from dalle2_pytorch import DALLE2

    cache = Path(os.environ.get("DALLE2_TOY_CACHE") or Path(tempfile.gettempdir()) / "dalle2-toy-small")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code = f"from dalle2_pytorch.runs.demo import run_demo; run_demo('small', out={str(cache)!r}, say=print)"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(["nice", "-n", "10", sys.executable, "-c", code], check=True, env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL)
    return DALLE2.from_pretrained(cache / "checkpoints").eval()


def toy_images(specs: list[tuple[str, str]], seed: int = 0) -> torch.Tensor:
    """32 px toy images of (colour, shape) pairs, each with a slightly different size and centre."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for colour, shape in specs:
        radius = 0.24 + 0.04 * torch.rand((), generator=generator).item()
        dx, dy = (0.04 * (torch.rand(2, generator=generator) - 0.5)).tolist()
        out.append(render_shape(ShapeSpec(colour, shape, center=(0.5 + dx, 0.5 + dy), radius=radius), 32))
    return torch.stack(out)

"""Where the legacy reference fixtures live: ``../shared/fixtures/dalle2_pytorch_legacy`` beside the repo
(CI's read-only copy), or two levels up for a git worktree in ``<root>/wt/<name>``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [_ROOT / ".." / "shared", _ROOT / ".." / ".." / "shared"]
LEGACY = next((c / "fixtures" / "dalle2_pytorch_legacy" for c in _CANDIDATES
               if (c / "fixtures" / "dalle2_pytorch_legacy" / "README.md").is_file()), None)

needs_legacy = pytest.mark.skipif(LEGACY is None, reason="the shared legacy fixtures (../shared/fixtures/"
                                  "dalle2_pytorch_legacy beside the repository) are not present")


def legacy_case(case: str) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(checkpoint path, description, recorded inputs/outputs cloned to aligned memory) of one case."""
    meta = json.loads((LEGACY / f"{case}.json").read_text())
    io = {k: v.clone() for k, v in load_file(str(LEGACY / f"{case}.io.safetensors")).items()}
    return LEGACY / f"{case}.pth", meta, io

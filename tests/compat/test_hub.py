"""``hub:`` names resolve through huggingface_hub's cache; tested offline (HF_HUB_OFFLINE=1), no network."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dalle2_pytorch.hub import resolve_pretrained

from tests.compat.legacy_fixtures import legacy_case, needs_legacy

pytest.importorskip("huggingface_hub", reason="optional extra 'hub' (huggingface_hub) not installed")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[2]


def _prepopulate(cache: Path, files: dict[str, Path], repo: str = "laion/DALLE2-PyTorch") -> None:
    """The layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/<path>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        target = base / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def test_local_paths_pass_through_and_bad_hub_names_are_explained(tmp_path):
    assert resolve_pretrained(tmp_path / "x.pth") == tmp_path / "x.pth"
    with pytest.raises(ValueError, match="not a Hugging Face Hub id"):
        resolve_pretrained("hub:laion-only")


@needs_legacy
def test_a_hub_name_loads_from_the_offline_cache_and_a_miss_is_a_clear_error(tmp_path):
    path, meta, _ = legacy_case("laion_decoder_110")
    (tmp_path / "kwargs.json").write_text(json.dumps(meta["kwargs"]))
    _prepopulate(tmp_path / "hub", {"decoder/v1.0.2/latest.pth": path, "decoder/v1.0.2/kwargs.json": tmp_path / "kwargs.json"})
    script = """
import sys, torch
from dalle2_pytorch.decoder import Decoder
name = 'hub:laion/DALLE2-PyTorch/decoder/v1.0.2/'
decoder = Decoder.from_reference_checkpoint(name + 'latest.pth', name + 'kwargs.json')
local = Decoder.from_reference_checkpoint(sys.argv[1], sys.argv[2])
assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), local.state_dict().values()))
try:
    Decoder.from_reference_checkpoint('hub:laion/DALLE2-PyTorch@main/decoder/1.5B/latest.pth', sys.argv[2])
except FileNotFoundError as error:
    print('MISS', error)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "kwargs.json")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MISS could not get hub:laion/DALLE2-PyTorch@main/decoder/1.5B/latest.pth" in result.stdout

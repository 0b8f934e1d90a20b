"""Trackers and savers: the JSONL log, the console, image grids, optional extras failing clearly, local copies."""

import builtins
import json
import sys

import pytest
import torch
from PIL import Image

from dalle2_pytorch.trackers import ConsoleTracker, JsonlTracker, LocalSaver, TensorBoardTracker, TrackerGroup, \
    WandbTracker


def test_jsonl_tracker_logs_metrics_and_image_grids(tmp_path):
    tracker = JsonlTracker(tmp_path)
    tracker.log({"loss": torch.tensor(0.5), "epoch": 1, "bad": float("nan")}, step=10)
    tracker.log_images("samples", torch.rand(4, 3, 8, 8), ["a", "b", "c", "d"], step=10)
    tracker.log_config({"trainer": {"lr": 1e-3}})
    tracker.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 10 and lines[0]["loss"] == 0.5 and lines[0]["bad"] == "nan"
    image_path = lines[1]["path"]
    assert lines[1]["image"] == "samples" and Image.open(image_path).size[0] >= 4 * 96
    assert json.loads((tmp_path / "config.json").read_text())["trainer"]["lr"] == 1e-3


def test_console_tracker_and_group(tmp_path):
    written = []
    console = ConsoleTracker(every=2, write=written.append)
    group = TrackerGroup([console, JsonlTracker(tmp_path)])
    for step in range(1, 5):
        group.log({"loss": 1.0 / step}, step)
    group.close()
    assert written == ["step 2: loss=0.5", "step 4: loss=0.25"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="every must be a positive int"):
        ConsoleTracker(every=0)


@pytest.mark.parametrize("make, package", [
    (lambda tmp: TensorBoardTracker(tmp), "tensorboard"),
    (lambda tmp: WandbTracker(project="p", mode="offline", directory=tmp), "wandb"),
])
def test_optional_trackers_say_which_package_is_missing(tmp_path, monkeypatch, make, package):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setitem(sys.modules, package, None)   # absent even when installed and imported by another test
    with pytest.raises(ImportError, match=f"pip install {package}"):
        make(tmp_path)


def test_wandb_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode='sometimes'"):
        WandbTracker(project="p", mode="sometimes")


def test_local_saver_replaces_previous_copy(tmp_path):
    checkpoint = tmp_path / "latest"
    checkpoint.mkdir()
    (checkpoint / "weights.bin").write_bytes(b"one")
    saver = LocalSaver(tmp_path / "copies")
    saver.save(checkpoint, "latest")
    (checkpoint / "weights.bin").write_bytes(b"two")
    target = saver.save(checkpoint, "latest")
    assert (target / "weights.bin").read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == ["latest"]


def test_jsonl_resume_drops_the_steps_to_be_rerun_and_marks_the_resume(tmp_path):
    """Killed at step 5 with a checkpoint of step 3: steps 4 and 5 (and a line cut short by the kill) go, a marker
    line says where the run resumed, and the re-run steps are then logged once."""
    tracker = JsonlTracker(tmp_path)
    for step in range(1, 6):
        tracker.log({"loss": float(step)}, step)
    tracker.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "lo')
    group = TrackerGroup([JsonlTracker(tmp_path)])
    group.resumed(3)
    for step in (4, 5, 6):
        group.log({"loss": -float(step)}, step)
    group.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 3, 4, 5, 6]
    assert lines[3]["event"] == "resume" and lines[3]["dropped_lines"] == 3
    assert [line["loss"] for line in lines if "loss" in line] == [1.0, 2.0, 3.0, -4.0, -5.0, -6.0]

"""Weights & Biases on ``--resume``, with the real ``wandb`` package in offline mode (no network, no account): the
resumed run reopens the W&B run the interrupted one started (its id kept in ``logs/wandb_run_id``), instead of
starting another, and what both logged is read back from W&B's own offline files."""

import struct
from pathlib import Path

import pytest

from dalle2_pytorch.runs.loop import TrainingRun
from .tiny_configs import tracked_clip_config

pytestmark = pytest.mark.optional
wandb = pytest.importorskip("wandb")


class Killed(Exception):
    pass


def wandb_records(path) -> list[bytes]:
    """The records of a ``.wandb`` run file: W&B's header (``:W&B``, magic 0xBEE1, a version byte), then LevelDB-log
    framing in blocks of 32 KiB (per chunk: CRC32C, length, type full/first/middle/last; block tails under 7 bytes
    are padding)."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6]) == (0xBEE1,)
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        left_in_block = 32768 - offset % 32768
        if left_in_block < 7:
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if kind == 0 and length == 0:   # zeroed tail: nothing more was written
            break
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def logged_steps(run_folder) -> list[int]:
    """The step of every history record one offline run logged, read back from its ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    steps = []
    for data in wandb_records(next(run_folder.glob("run-*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            steps.append(record.history.step.num)
    return steps


def test_a_resumed_run_logs_into_the_wandb_run_it_started(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tracked_clip_config(tmp_path, wandb={"project": "toy", "mode": "offline"})

    def kill_at_step_6(step, batch):
        if step == 6:
            raise Killed

    training = TrainingRun(config, show_progress=False, on_batch=kill_at_step_6)
    with pytest.raises(Killed):
        training.run()
    training.tracker.close()   # a killed process's W&B service flushes what it got
    run_id = (tmp_path / "logs" / "wandb_run_id").read_text()
    assert run_id
    TrainingRun(config, resume=True, show_progress=False).run()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in runs)   # one W&B run, reopened
    assert (tmp_path / "logs" / "wandb_run_id").read_text() == run_id
    first, second = (logged_steps(folder) for folder in runs)
    assert first == [2, 4, 6] and second[0] == 6 and second[-1] == 12   # the resumed run goes on from the checkpoint

"""TensorBoard after a resume, read back as TensorBoard reads it: what the interrupted run logged after its last
checkpoint is hidden, every step appears once, and a text entry marks the resume."""

import json

import pytest

from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.trackers import TensorBoardTracker
from .tiny_configs import tracked_clip_config

pytestmark = pytest.mark.optional
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


class Killed(Exception):
    pass


def read_back(directory) -> EventAccumulator:
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_a_resumed_tracker_hides_the_steps_after_the_checkpoint(tmp_path):
    """Killed after logging step 10 with a checkpoint of step 8: the resumed run logs 10 again (not a step back, so
    TensorBoard's own out-of-order purge does not help); only the new value of step 10 remains."""
    first = TensorBoardTracker(tmp_path)
    for step in range(2, 11, 2):
        first.log({"loss": float(step)}, step)
    first.writer.flush()   # killed: the event file holds everything logged, the writer is never closed
    resumed = TensorBoardTracker(tmp_path)
    resumed.resumed(8, ["trainer.lr: 0.001 -> 0.0005"])
    for step in range(10, 15, 2):
        resumed.log({"loss": step + 0.5}, step)
    resumed.close()
    events = read_back(tmp_path)
    assert scalars(events, "loss") == [(2, 2.0), (4, 4.0), (6, 6.0), (8, 8.0), (10, 10.5), (12, 12.5), (14, 14.5)]
    marker = events.Tensors("resume/text_summary")
    assert [event.step for event in marker] == [8]
    assert b"trainer.lr: 0.001 -> 0.0005" in marker[0].tensor_proto.string_val[0]


def test_a_tracker_resumed_after_logging_reopens_its_file_with_the_purge(tmp_path):
    tracker = TensorBoardTracker(tmp_path)
    for step in (1, 2, 3):
        tracker.log({"loss": float(step)}, step)
    tracker.resumed(1)
    tracker.log({"loss": 3.5}, 3)
    tracker.close()
    assert scalars(read_back(tmp_path), "loss") == [(1, 1.0), (3, 3.5)]


def test_a_killed_and_resumed_run_logs_every_step_once_to_tensorboard(tmp_path):
    config = tracked_clip_config(tmp_path, tensorboard=True)

    def kill_at_step_10(step, batch):
        if step == 10:
            training.tracker.trackers[-1].writer.flush()   # as if every event had reached the disk
            raise Killed

    training = TrainingRun(config, show_progress=False, on_batch=kill_at_step_10)
    with pytest.raises(Killed):
        training.run()
    assert [step for step, _ in scalars(read_back(tmp_path / "tensorboard"), "loss")] == [2, 4, 6, 8, 10]
    summary = TrainingRun(config, resume=True, show_progress=False).run()
    assert summary["step"] == 12
    logged = {entry["step"]: entry["loss"] for entry in map(json.loads, (tmp_path / "logs" / "metrics.jsonl")
                                                            .read_text().splitlines()) if "loss" in entry}
    events = read_back(tmp_path / "tensorboard")
    assert [step for step, _ in scalars(events, "loss")] == [2, 4, 6, 8, 10, 12]
    assert all(value == pytest.approx(logged[step]) for step, value in scalars(events, "loss"))
    assert [event.step for event in events.Tensors("resume/text_summary")] == [8]

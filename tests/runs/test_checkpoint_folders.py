"""Checkpoint folders besides ``latest``: ``best`` and the ``copy_to`` copies survive a kill at any point of a save
(written with the same atomic swap, recovered at start), and ``--resume`` refuses a config that changes what the
checkpoint means while allowing (and logging) what only changes how the run goes on."""

import json

import pytest

import dalle2_pytorch.runs.loop as loop
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun

from .test_resume import Killed, run, tiny_clip_config


def with_validation(config, **checkpointing):
    return config.model_copy(update={
        "evaluation": config.evaluation.model_copy(update={"validate_every": 3}),
        "checkpointing": config.checkpointing.model_copy(update=checkpointing)})


def counters(folder):
    return json.loads((folder / "training_state.json").read_text())["counters"]


def test_a_kill_between_the_best_and_latest_saves_never_leaves_best_stale(tmp_path, monkeypatch):
    config = with_validation(tiny_clip_config(tmp_path / "run"), best_metric="val_loss", best_mode="min")
    original, calls = loop.save_checkpoint, []

    def killed_on_the_second_save_of_step_6(directory, *args, **kwargs):
        calls.append(directory.name)
        if len(calls) == 4:  # step 3 wrote two folders; the kill comes between the two saves of step 6
            raise Killed
        return original(directory, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", killed_on_the_second_save_of_step_6)
    with pytest.raises(Killed):
        TrainingRun(config, show_progress=False).run()
    assert sorted(calls) == ["best", "best", "latest", "latest"]  # val_loss improved at steps 3 and 6
    latest, best = counters(tmp_path / "run" / "latest"), counters(tmp_path / "run" / "best")
    # best is never older than what latest says is best: it holds the best of latest's steps, or a newer one
    assert best["best"] == latest["best"] or best["step"] > latest["step"]
    monkeypatch.setattr(loop, "save_checkpoint", original)
    summary = TrainingRun(config, resume=True, show_progress=False).run()
    assert summary["step"] == 16
    latest, best = counters(tmp_path / "run" / "latest"), counters(tmp_path / "run" / "best")
    assert best["best"] == latest["best"]


def test_best_and_copies_killed_between_their_renames_are_recovered_at_start(tmp_path):
    config = with_validation(tiny_clip_config(tmp_path / "run"), copy_to=str(tmp_path / "copy"))
    run(config, kill_at=7)  # saved at step 3 and 6: latest, best and their copies
    moved = [tmp_path / "run" / "best", tmp_path / "copy" / "latest", tmp_path / "copy" / "best"]
    for folder in moved:  # as if killed after moving each old folder aside, before renaming the new one in
        folder.rename(folder.parent / f".{folder.name}.old")
    TrainingRun(config, resume=True, show_progress=False)
    for folder in moved:
        assert (folder / "model").is_dir() and counters(folder)["step"] == 6
        assert not (folder.parent / f".{folder.name}.old").exists()


def test_resume_refuses_a_config_that_changes_what_the_checkpoint_means(tmp_path):
    config = tiny_clip_config(tmp_path / "run")
    run(config, kill_at=4)
    data = config.model_dump(mode="json")
    data["model"]["dim_latent"] = 16
    data["data"].update(batch_size=4, seed=1, num_workers=0)
    data["trainer"]["seed"] = 3
    changed = config_from_dict(data)
    with pytest.raises(ValueError, match="changes what the checkpoint") as error:
        TrainingRun(changed, resume=True, show_progress=False)
    message = str(error.value)
    for line in ("model.dim_latent: 8 -> 16", "data.batch_size: 8 -> 4", "data.seed: 0 -> 1", "trainer.seed: 0 -> 3"):
        assert line in message
    assert "num_workers" not in message


def test_resume_allows_and_logs_changes_to_how_the_run_goes_on(tmp_path):
    config = tiny_clip_config(tmp_path / "run")
    run(config, kill_at=4)
    data = config.model_dump(mode="json")
    data["trainer"].update(lr=5e-4, max_steps=10)
    data["tracker"]["log_every"] = 2
    summary = TrainingRun(config_from_dict(data), resume=True, show_progress=False).run()
    assert summary["step"] == 10
    logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    marker = next(entry for entry in logged if entry.get("event") == "resume")
    assert marker["config_changes"] == ["tracker.log_every: 10 -> 2", "trainer.lr: 0.001 -> 0.0005",
                                        "trainer.max_steps: None -> 10"]


def test_a_checkpoint_without_its_config_and_a_model_of_another_shape_is_a_clear_error(tmp_path):
    config = tiny_clip_config(tmp_path / "run")
    run(config, kill_at=4)
    state = tmp_path / "run" / "latest" / "training_state.json"
    state.write_text(json.dumps({"counters": json.loads(state.read_text())["counters"]}))  # as older versions wrote
    data = config.model_dump(mode="json")
    data["model"]["dim_latent"] = 16
    with pytest.raises(ValueError, match=r"saved weights do not fit this .*size mismatch"):
        TrainingRun(config_from_dict(data), resume=True, show_progress=False)

"""`data.resample_shards`: each process draws img2dataset shards with replacement from its own seeded stream, an
epoch is `epoch_samples` samples, so uneven shards never leave a process short; the streams are deterministic, differ
per process and epoch, and a resumed run trains exactly what an uninterrupted one does."""

import json

import pytest

from dalle2_pytorch.runs.config_base import ConfigError
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.data_sources import build_source
from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.runs.resume_check import config_changes
from ..data.shard_helpers import write_clip_retrieval_output, write_img2dataset_shard
from .distributed import train_two_processes
from .test_resume import assert_same_weights
from .test_uneven_shards import shard_decoder_config

pytest.importorskip("pyarrow")


class Killed(Exception):
    pass


def uneven_shards(root, sizes=(20, 12)) -> None:
    """Shards of ``sizes`` samples (the rest of 20 failed to download) with their clip-retrieval embeddings."""
    keys = []
    for shard, size in enumerate(sizes):
        failed = tuple(range(size, 20))
        keys += write_img2dataset_shard(root / "laion", shard, list(range(20)), failed=failed)
    write_clip_retrieval_output(root / "laion_embeddings", keys)


def decoder_config(root, directory, **data) -> dict:
    """A tiny decoder on resampled shards: batches of 4, 24 samples an epoch, 2 epochs, an EMA, saved every 4 steps."""
    config = shard_decoder_config(root, directory, **{"batch_size": 4, "shuffle_num": 8, "resample_shards": True,
                                                      "epoch_samples": 24, **data})
    config["trainer"]["ema_beta"] = 0.9
    config["checkpointing"]["save_every"] = 4
    return config


def captions(source, epoch: int, skip: int = 0) -> list[list[str]]:
    return [batch["captions"] for batch in source.epoch_batches(epoch, skip)]


def test_resampling_needs_an_epoch_length_and_only_it_uses_one(tmp_path):
    config = decoder_config(tmp_path, tmp_path / "run")
    del config["data"]["epoch_samples"]
    with pytest.raises(ConfigError, match="set epoch_samples"):
        config_from_dict(config)
    config["data"].update(resample_shards=False, epoch_samples=24)
    with pytest.raises(ConfigError, match="epoch_samples applies only with resample_shards"):
        config_from_dict(config)


def test_resampled_streams_are_seeded_per_process_and_epoch_and_resume_in_order(tmp_path):
    """Each of 2 processes trains 6 batches of 4 per epoch (epoch_samples=48): more than either shard holds, drawn
    from both shards with replacement."""
    uneven_shards(tmp_path)
    data = config_from_dict(decoder_config(tmp_path, tmp_path / "run", num_workers=2, epoch_samples=48)).data
    ranks = [build_source(data, rank, 2, embed_dim=8) for rank in (0, 1)]
    assert ranks[0].num_batches() == 48 // (4 * 2) == 6
    epochs = [captions(rank, 0) for rank in ranks]
    for epoch in epochs:
        assert [len(batch) for batch in epoch] == [4] * 6
        drawn = [caption.split()[-1] for batch in epoch for caption in batch]
        assert {key[:5] for key in drawn} == {"00000", "00001"} and len(set(drawn)) < len(drawn)
    assert captions(build_source(data, 0, 2, embed_dim=8), 0) == epochs[0]   # deterministic, in a fresh source too
    assert epochs[1] != epochs[0] and captions(ranks[0], 1) != epochs[0]     # another rank, another epoch
    assert captions(ranks[0], 0, skip=3) == epochs[0][3:]                    # resumed mid-epoch: the same rest
    with pytest.raises(ValueError, match="epoch_samples=4 is less than one batch per process"):
        build_source(data.model_copy(update={"epoch_samples": 4}), 0, 2)


def test_settings_added_after_a_checkpoint_at_their_defaults_are_no_change():
    saved = {"data": {"source": "webdataset", "seed": 0}}
    off = {"data": {"source": "webdataset", "seed": 0, "resample_shards": False, "epoch_samples": None}}
    assert config_changes(saved, off) == ([], [])
    on = {"data": {**off["data"], "resample_shards": True, "epoch_samples": 24}}
    assert config_changes(saved, on)[0] == ["data.epoch_samples: '<unset>' -> 24",
                                            "data.resample_shards: '<unset>' -> True"]


def train(config: dict, *, resume: bool = False, kill_at=None):
    seen = []

    def on_batch(step, batch):
        if step == kill_at:
            raise Killed
        seen.append(batch["captions"])

    losses = []
    training = TrainingRun(config_from_dict(config), resume=resume, show_progress=False, on_batch=on_batch)
    step = training.task.train_step
    training.task.train_step = lambda *args: losses.append(step(*args)["loss"]) or {"loss": losses[-1]}
    try:
        training.run()
    except Killed:
        pass
    return training, seen, losses


@pytest.mark.slow
def test_a_resumed_run_on_resampled_shards_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """12 steps (2 epochs of 6 batches, 2 loader workers) straight, and killed at step 7 then resumed from the step-5
    checkpoint (an odd batch of the epoch: the workers take turns from the one whose batch comes next)."""
    uneven_shards(tmp_path)
    reference, seen_straight, losses_straight = train(decoder_config(tmp_path, tmp_path / "straight", num_workers=2))
    assert len(seen_straight) == 12
    interrupted = decoder_config(tmp_path, tmp_path / "interrupted", num_workers=2)
    interrupted["checkpointing"]["save_every"] = 5
    _, seen_before, losses_before = train(interrupted, kill_at=7)
    resumed, seen_after, losses_after = train(interrupted, resume=True)
    assert seen_before[:5] + seen_after == seen_straight                  # the same batches in the same order
    assert losses_before[:5] + losses_after == losses_straight            # every loss bit for bit
    assert_same_weights(resumed, reference)


@pytest.mark.slow
def test_two_processes_on_uneven_resampled_shards_finish(tmp_path):
    """Shards of 20 and 12 samples: each of 2 processes trains 6 batches of 4 (epoch_samples=48, more than either
    shard holds: split among the processes instead, one would run out) and the run saves one checkpoint."""
    uneven_shards(tmp_path)
    config = decoder_config(tmp_path, tmp_path / "run", epoch_samples=48)
    config["trainer"]["epochs"] = 1
    result = train_two_processes(tmp_path / "out", "decoder", config, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["step"] == 6 and summary["epoch"] == 1 and summary["samples_seen"] == 6 * 4 * 2
    trained = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert trained[0] == trained[1] == [4] * 6
    state = json.loads((tmp_path / "run" / "latest" / "training_state.json").read_text())
    assert state["counters"]["step"] == 6 and state["config"]["data"]["resample_shards"] is True

"""Two processes on img2dataset shards of different sizes (failed downloads) finish: every rank runs the same number
of steps per epoch, as many as the rank with the fewest batches has, so no rank waits forever for another."""

import json

import pytest

from ..data.shard_helpers import write_clip_retrieval_output, write_img2dataset_shard
from .distributed import train_two_processes

pytest.importorskip("pyarrow")


def shard_decoder_config(root, directory, **data) -> dict:
    """A tiny decoder run on the two img2dataset shards under ``root/laion`` (and their clip-retrieval embeddings),
    with ``data`` settings on top of these."""
    return {
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "image_embed_dim": 8, "num_resnet_blocks": 1,
                            "attn_heads": 1, "attn_dim_head": 8}],
                  "image_sizes": [16], "timesteps": 20, "learned_variance": False},
        "data": {"source": "webdataset", "urls": f"{root}/laion/{{00000..00001}}.tar",
                 "embeddings_url": f"{root}/laion_embeddings/img_emb", "shard_width": 5, "image_size": 16,
                 "batch_size": 10, "num_workers": 0, "shuffle_num": 0, **data},
        "trainer": {"epochs": 2, "lr": 1e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "sample_steps": 10},
        "tracker": {"console": False, "log_every": 1},
        "checkpointing": {"directory": str(directory), "save_every": 1000},
    }


@pytest.mark.slow
def test_two_processes_on_uneven_shards_finish_with_one_checkpoint(tmp_path):
    keys = write_img2dataset_shard(tmp_path / "laion", 0, list(range(100)), failed=tuple(range(0, 100, 10)))
    keys += write_img2dataset_shard(tmp_path / "laion", 1, list(range(100)), failed=tuple(range(0, 100, 5)))
    assert len(keys) == 90 + 80
    write_clip_retrieval_output(tmp_path / "laion_embeddings", keys)
    config = shard_decoder_config(tmp_path, tmp_path / "run")
    # one shard per rank: 9 and 8 batches of 10; before, the rank with 8 went on alone and both hung
    result = train_two_processes(tmp_path / "out", "decoder", config, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["step"] == 16 and summary["epoch"] == 2 and summary["samples_seen"] == 16 * 10 * 2
    trained = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert trained[0] == trained[1] == [10] * 16   # the same 16 full batches on each rank
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["latest", "logs"]
    assert json.loads((run / "latest" / "training_state.json").read_text())["counters"]["step"] == 16

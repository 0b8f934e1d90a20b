"""A config-driven decoder run on img2dataset shards with clip-retrieval's own output trains (the issue's
``img_emb_0.npy`` folder used to train 0 steps and exit 0), and data that yields nothing stops the run."""

import numpy as np
import pytest

from dalle2_pytorch.data import NoDataError
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun

from .shard_helpers import write_clip_retrieval_output, write_img2dataset_shard

pytest.importorskip("pyarrow")


def _config(tmp_path, embeddings_url):
    return config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "image_embed_dim": 8, "num_resnet_blocks": 1,
                             "attn_heads": 1, "attn_dim_head": 8}],
                  "image_sizes": [16], "timesteps": 20, "learned_variance": False},
        "data": {"source": "webdataset", "urls": f"{tmp_path}/laion/{{00000..00001}}.tar",
                 "embeddings_url": embeddings_url, "shard_width": 5, "image_size": 16, "batch_size": 2,
                 "num_workers": 0, "shuffle_num": 0},
        "trainer": {"epochs": 1, "lr": 1e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "num_samples": 2,
                       "sample_steps": 2},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 100},
    })


def _laion(tmp_path):
    keys = []
    for shard in range(2):
        keys += write_img2dataset_shard(tmp_path / "laion", shard, list(range(5)), failed=(2,))
    return keys


def test_decoder_trains_on_clip_retrieval_output(tmp_path):
    keys = _laion(tmp_path)
    write_clip_retrieval_output(tmp_path / "laion_embeddings", keys, partitions=1)  # img_emb/img_emb_0.npy
    summary = TrainingRun(_config(tmp_path, f"{tmp_path}/laion_embeddings/img_emb"), show_progress=False).run()
    assert summary["step"] == 4 and summary["samples_seen"] == 8


def test_decoder_run_on_data_that_yields_nothing_is_an_error(tmp_path):
    _laion(tmp_path)
    (tmp_path / "emb").mkdir()
    with pytest.raises(ValueError, match=r"no img_emb_<number>.npy in .*emb"):
        TrainingRun(_config(tmp_path, str(tmp_path / "emb")), show_progress=False)
    for shard in range(2):  # files for every shard, but every row is zero (no embedding)
        np.save(tmp_path / "emb" / f"img_emb_{shard}.npy", np.zeros((5, 8), np.float16))
    run = TrainingRun(_config(tmp_path / "", str(tmp_path / "emb")), show_progress=False)
    with pytest.warns(RuntimeWarning), pytest.raises(NoDataError, match=r"missing_embeddings.*shard_width=5"):
        run.run()


def test_embeddings_narrower_than_the_model_are_an_error_at_start_naming_the_file(tmp_path):
    keys = _laion(tmp_path)
    write_clip_retrieval_output(tmp_path / "laion_embeddings", keys, partitions=1, dim=4)  # the unet reads 8
    with pytest.raises(ValueError, match=r"img_emb_0\.npy.* width 4 .*the model expects 8"):
        TrainingRun(_config(tmp_path, f"{tmp_path}/laion_embeddings/img_emb"), show_progress=False)

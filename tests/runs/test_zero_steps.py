"""A run whose data yields no batch is an error naming the data settings, never an exit-0 'trained' checkpoint."""

import pytest

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun


def test_a_run_that_trains_zero_steps_fails_and_names_its_data(tmp_path):
    config = config_from_dict({
        "kind": "vae",
        "model": {"dim": 8, "image_size": 16, "layers": 1, "vq_codebook_dim": 4, "vq_codebook_size": 16,
                  "use_vgg_and_gan": False, "attn_heads": 1, "attn_dim_head": 8},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 2, "lr": 1e-3},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(tmp_path / "vae")},
    })
    run = TrainingRun(config, show_progress=False)
    # a streaming source whose shards all turned out empty: every epoch ends without a batch
    run.source.epoch_batches = lambda epoch, skip=0: iter(())
    with pytest.raises(RuntimeError, match="trained 0 steps.*'num_samples': 40"):
        run.run()
    assert not (tmp_path / "vae" / "latest").exists()

"""``trainer.gradient_accumulation``: the batch goes through the model in micro-batches whose gradients add up to the
whole batch's (a deterministic model ends where the whole batch takes it); the precision comes from one place."""

import warnings

import pytest
import torch
from accelerate import Accelerator

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.trainers.base import resolve_precision


def vae_config(directory, accumulation):
    # no k-means init or dead-code refill of the codebook from a batch (and no codebook EMA, see train): the loss is
    # a mean over rows with nothing that depends on how the batch is split
    return config_from_dict({
        "kind": "vae",
        "model": {"dim": 8, "image_size": 16, "layers": 1, "vq_codebook_dim": 4, "vq_codebook_size": 16,
                  "vq_kmeans_init": False, "vq_threshold_ema_dead_code": 0, "use_vgg_and_gan": False, "attn_heads": 1,
                  "attn_dim_head": 8},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 1, "max_steps": 3, "lr": 1e-3, "gradient_accumulation": accumulation},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(directory), "save_every": 100},
    })


def train(config):
    """Run ``config``; returns the summary, the rows of each forward and the gradients of the first update."""
    rows, gradients = [], []
    run = TrainingRun(config, show_progress=False)
    run.model.vq._codebook.ema_update = False  # the codebook's moving average is updated by every forward
    loss, update = run.task.loss, run.trainer._update
    run.task.loss = lambda model, batch, step: rows.append(len(batch["images"])) or loss(model, batch, step)

    def recording_update(part):
        if not gradients:
            gradients.extend(p.grad.clone() for p in part.params)
        update(part)

    run.trainer._update = recording_update
    return run.run(), rows, gradients


def test_two_micro_batches_of_four_update_like_one_batch_of_eight(tmp_path):
    """The gradients of the first update agree to float rounding (the weights after several Adam steps do not
    compare well: Adam turns a rounding difference in a near-zero gradient into a whole step)."""
    _, whole_rows, whole = train(vae_config(tmp_path / "whole", 1))
    summary, split_rows, split = train(vae_config(tmp_path / "split", 2))
    assert summary["step"] == 3 and summary["samples_seen"] == 24
    assert whole_rows[:3] == [8, 8, 8] and split_rows[:6] == [4] * 6   # (then the final validation batch)
    assert len(whole) == len(split) > 10 and sum(bool(g.abs().sum()) for g in whole) > 10
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_clip_refuses_micro_batches():
    from .test_resume import tiny_clip_config

    data = tiny_clip_config("unused").model_dump(mode="json")
    data["trainer"]["gradient_accumulation"] = 2
    with pytest.raises(ValueError, match="contrastive loss compares every pair"):
        TrainingRun(config_from_dict(data), show_progress=False)


def test_precision_comes_from_accelerate_unless_the_config_sets_it(monkeypatch):
    accelerator = Accelerator()
    assert resolve_precision(None, accelerator) == accelerator.mixed_precision == "no"
    monkeypatch.setattr(type(accelerator), "mixed_precision", property(lambda self: "bf16"))
    assert resolve_precision(None, accelerator) == "bf16"          # unset: accelerate's setting
    with pytest.warns(UserWarning, match="overrides accelerate's 'bf16'"):
        assert resolve_precision("no", accelerator) == "no"        # set: the config's, and said so
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", accelerator) == "bf16"    # the same: nothing to say
    assert config_from_dict(vae_config("unused", 1).model_dump(mode="json")).trainer.mixed_precision is None

"""Trainer arguments and checkpoint mismatches fail with messages that name what was wrong; valid edge values work."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer, ModelTrainer
from dalle2_pytorch.trainers.ema import EMASettings

from .helpers import EMBED_DIM, tiny_decoder, tiny_prior


def test_accelerator_and_bad_step_limit_are_checked():
    with pytest.raises(TypeError, match="accelerator must be an accelerate.Accelerator, got str"):
        ModelTrainer(nn.Linear(2, 2), lr=1e-3, accelerator="cpu")
    trainer = ModelTrainer(nn.Linear(2, 2), lr=1e-3, accelerator=Accelerator(cpu=True))
    assert trainer.accelerator.device.type == "cpu"
    with pytest.raises(ValueError, match=r"^max_consecutive_bad_steps=0: expected a positive int"):
        DecoderTrainer(tiny_decoder(), max_consecutive_bad_steps=0)


@pytest.mark.parametrize("name", ["lr", "wd", "eps", "warmup_steps", "cosine_decay_max_steps"])
def test_a_per_unet_setting_of_the_wrong_length_is_an_error_naming_it(name):
    expected = rf"^{name}=\(1, 1, 1\) has 3 entries; expected one value or 2 \(one per unet\)"
    with pytest.raises(ValueError, match=expected):
        DecoderTrainer(tiny_decoder(num_unets=2), **{name: (1, 1, 1)})


def test_a_model_without_a_config_saves_and_loads(tmp_path):
    """A plain module has no ``config`` to rebuild it from: its checkpoint records none, and loads back."""
    torch.manual_seed(0)
    trainer = ModelTrainer(nn.Linear(2, 2), lr=1e-3, device="cpu")
    _, meta = trainer.training_state()
    assert meta["model"] is None
    trainer.save(tmp_path / "plain.safetensors")
    other = ModelTrainer(nn.Linear(2, 2), lr=1e-3, device="cpu")
    other.load(tmp_path / "plain.safetensors")
    assert torch.equal(other.model.weight, trainer.model.weight)


def test_loading_a_checkpoint_without_ema_into_an_ema_trainer_is_a_clear_error(tmp_path):
    DecoderTrainer(tiny_decoder(), use_ema=False).save(tmp_path / "no_ema.safetensors")
    with pytest.raises(ValueError, match="has no EMA for unet1; build the trainer with use_ema=False"):
        DecoderTrainer(tiny_decoder()).load(tmp_path / "no_ema.safetensors")


def test_a_decoder_with_nothing_to_train_is_an_error():
    decoder = tiny_decoder()
    decoder.requires_grad_(False)
    with pytest.raises(ValueError, match="the decoder has no unet with trainable parameters"):
        DecoderTrainer(decoder)


def test_ema_settings_accept_beta_zero_and_name_a_bad_inv_gamma():
    assert EMASettings(beta=0.0).beta == 0.0  # beta 0: the average is the online weights
    with pytest.raises(ValueError, match=r"^ema_inv_gamma=0.0: expected a positive number"):
        EMASettings(beta=0.9, inv_gamma=0.0)


@pytest.mark.parametrize("use_non_ema", [False, True])
def test_prior_trainer_samples_in_chunks_of_at_most_max_batch_size(monkeypatch, use_non_ema):
    trainer = DiffusionPriorTrainer(tiny_prior(), lr=1e-3)
    rows = []
    original = trainer.model.sample

    def recording(*args, **kwargs):
        rows.append(kwargs["text_embed"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "sample", recording)
    out = trainer.sample(text_embed=torch.randn(5, EMBED_DIM), max_batch_size=2, timesteps=3, use_non_ema=use_non_ema)
    assert out.shape == (5, EMBED_DIM) and rows == [2, 2, 1]


def test_prior_trainer_samples_with_the_ema_network_unless_asked_not_to():
    trainer = DiffusionPriorTrainer(tiny_prior(), lr=1e-2, ema_beta=0.5, ema_update_after_step=0, ema_update_every=1)
    for _ in range(2):
        trainer(text_embed=torch.randn(4, EMBED_DIM), image_embed=torch.randn(4, EMBED_DIM))
        trainer.update()
    text_embed = torch.randn(3, EMBED_DIM)

    def draw(sample, **kwargs):
        return sample(text_embed=text_embed, timesteps=3, generator=torch.Generator().manual_seed(0), **kwargs)

    online = draw(trainer.model.sample)
    assert torch.equal(draw(trainer.sample, use_non_ema=True), online)
    assert not torch.equal(draw(trainer.sample), online)

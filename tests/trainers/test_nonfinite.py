"""Non-finite losses: the step is skipped, counted and warned about; a run of them stops training."""

import math

import pytest
import torch

from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from tests.trainers.helpers import Regression, RegressionTrainer, batch, tiny_decoder


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, generator=g), torch.randn(8, generator=g)


def test_nan_loss_skips_the_step_and_counts_it():
    trainer = RegressionTrainer(Regression(), max_consecutive_bad_steps=3)
    x, y = data()
    before = [p.clone() for p in trainer.model.parameters()]
    bad_y = y.clone()
    bad_y[3] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        assert math.isnan(trainer(x, bad_y, max_batch_size=4))
        trainer.update()
    part = trainer.parts["net"]
    assert part.step == 0 and part.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert all(p.grad is None for p in trainer.model.parameters())
    trainer(x, y)
    trainer.update()
    assert part.step == 1 and part.consecutive_bad_steps == 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_consecutive_bad_steps_raise_a_clear_error():
    trainer = RegressionTrainer(Regression(), max_consecutive_bad_steps=3)
    x, y = data()
    y = torch.full_like(y, float("inf"))
    with pytest.warns(RuntimeWarning):
        for _ in range(2):
            trainer(x, y)
            trainer.update()
    trainer(x, y)
    with pytest.raises(FloatingPointError, match="3 consecutive steps"):
        trainer.update()


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = DecoderTrainer(tiny_decoder(1), use_ema=False)
    images, embeds = batch(2, 8)
    trainer(images, image_embed=embeds)
    trainer.update()
    trainer.save(tmp_path / "good.safetensors")
    with torch.no_grad():
        next(trainer.decoder.get_unet(1).parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        trainer.save(tmp_path / "good.safetensors")
    trainer.load(tmp_path / "good.safetensors")  # the good checkpoint is intact
    assert all(torch.isfinite(p).all() for p in trainer.decoder.parameters())

"""Gradient accumulation: a batch split into max_batch_size chunks gives the unsplit loss and gradients."""

import pytest
import torch

from dalle2_pytorch.trainers.accumulation import sample_in_chunks, split_batch
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from tests.trainers.helpers import EMBED_DIM, Regression, RegressionTrainer, tiny_prior


def test_split_batch_fractions_and_passthrough():
    x, captions = torch.arange(10), [str(i) for i in range(10)]
    chunks = list(split_batch((x,), {"captions": captions, "scale": 2.0}, max_batch_size=4))
    assert [f for f, _, _ in chunks] == [0.4, 0.4, 0.2]
    assert torch.equal(torch.cat([a[0] for _, a, _ in chunks]), x)
    assert sum((k["captions"] for _, _, k in chunks), []) == captions
    assert all(k["scale"] == 2.0 for _, _, k in chunks)
    assert len(list(split_batch((x,), {}, max_batch_size=None))) == 1
    with pytest.raises(ValueError, match="max_batch_size"):
        list(split_batch((x,), {}, max_batch_size=0))


def test_sample_in_chunks_concatenates_and_splits_batch_size():
    calls = []

    def fake_sample(x=None, batch_size=None):
        calls.append(batch_size if x is None else len(x))
        return torch.zeros(batch_size if x is None else len(x), 2)

    assert sample_in_chunks(fake_sample, (), {"x": torch.ones(7)}, 3).shape == (7, 2)
    assert sample_in_chunks(fake_sample, (), {}, 4, batch_size=10).shape == (10, 2)
    assert calls == [3, 3, 1, 4, 4, 2]


@pytest.mark.parametrize("max_batch_size", [1, 3, 4])
def test_accumulated_loss_and_gradients_equal_the_unsplit_batch(max_batch_size):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=g), torch.randn(10, generator=g)
    whole, split = RegressionTrainer(Regression()), RegressionTrainer(Regression())
    loss_whole = whole(x, y)
    loss_split = split(x, y=y, max_batch_size=max_batch_size)
    assert loss_split == pytest.approx(loss_whole, rel=1e-6, abs=1e-7)
    for a, b in zip(whole.model.parameters(), split.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    whole.update()
    split.update()
    for a, b in zip(whole.model.parameters(), split.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_prior_trainer_accumulates_and_samples_in_chunks():
    trainer = DiffusionPriorTrainer(tiny_prior(), lr=1e-3, ema_update_after_step=0, ema_update_every=1)
    text_embed, image_embed = torch.randn(6, EMBED_DIM), torch.randn(6, EMBED_DIM)
    loss = trainer(text_embed=text_embed, image_embed=image_embed, max_batch_size=4)
    assert loss > 0
    trainer.update()
    assert trainer.step == 1
    out = trainer.sample(text_embed=torch.randn(5, EMBED_DIM), max_batch_size=2, timesteps=3)
    assert out.shape == (5, EMBED_DIM) and torch.isfinite(out).all()

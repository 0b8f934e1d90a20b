"""DALLE2Trainer: the prior and the decoder trained together on (text, image) pairs with the trainers' core."""

from __future__ import annotations

import pytest
import torch

from dalle2_pytorch import DALLE2Trainer
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data.toy import COLOURS
from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.trainers import rebuild_model
from dalle2_pytorch.trainers.dalle2_trainer import _regrouped
from tests.factories import tiny_clip, tiny_prior_network, tiny_unet

NAMES = list(COLOURS)
PALETTE = torch.tensor([COLOURS[n] for n in NAMES], dtype=torch.float32) / 255
SIZE = 8


def tiny_pipeline(num_unets: int = 1) -> DALLE2:
    clip = tiny_clip(num_text_tokens=VOCAB_SIZE, dim_text=16, visual_image_size=SIZE)   # captions: BPE strings
    prior = DiffusionPrior(tiny_prior_network(16, max_text_len=8), clip=clip, timesteps=50, cond_drop_prob=0.2)
    unets = [tiny_unet() for _ in range(num_unets)]
    sizes = (SIZE,) if num_unets == 1 else (SIZE // 2, SIZE)
    decoder = Decoder(unet=tuple(unets), clip=clip, image_sizes=sizes, timesteps=50, learned_variance=False)
    return DALLE2(prior=prior, decoder=decoder)


def colour_batches(count: int, rows: int = 6, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        idx = torch.randint(0, len(NAMES), (rows,), generator=g)
        out.append(([NAMES[i] for i in idx], PALETTE[idx][:, :, None, None].expand(rows, 3, SIZE, SIZE).clone()))
    return out


def trainer_for(dalle2: DALLE2, **kwargs) -> DALLE2Trainer:
    settings = dict(prior_loss_weight=0.1, decoder_loss_weight=1.0, learning_rate=2e-3, ema_beta=0.9,
                    ema_update_after_step=0, ema_update_every=1)
    settings.update(kwargs)
    return DALLE2Trainer(dalle2, **settings)


@torch.no_grad()
def held_out_losses(dalle2: DALLE2, batches: list) -> tuple[float, float]:
    """Mean prior and decoder loss over fixed batches and fixed noise (the same draws before and after)."""
    torch.manual_seed(123)
    dalle2.train()
    prior = sum(float(dalle2.prior(text=dalle2._tokens(t, dalle2.prior.clip), image=i)) for t, i in batches)
    decoder = sum(float(dalle2.decoder(i, unet_number=1)) for _, i in batches)
    return prior / len(batches), decoder / len(batches)


def test_both_losses_fall_on_solid_colours():
    dalle2 = tiny_pipeline()
    held_out = colour_batches(8, seed=99)
    before = held_out_losses(dalle2, held_out)
    trainer = trainer_for(dalle2)
    history = trainer.train(colour_batches(5), num_train_steps=40, batch_size=6, progress=False)
    after = held_out_losses(dalle2, held_out)
    print(f"held-out prior loss {before[0]:.3f} -> {after[0]:.3f}, decoder loss {before[1]:.3f} -> {after[1]:.3f}")
    assert len(history) == 40 and trainer.step == 40
    assert after[0] < 0.8 * before[0], (before, after)  # prior
    assert after[1] < 0.8 * before[1], (before, after)  # decoder
    assert history[-1]["loss"] == pytest.approx(0.1 * history[-1]["prior"] + history[-1]["decoder"])


def test_regrouping_and_accumulation_count_pairs():
    loader = [([f"t{i}" for i in range(start, start + 5)], torch.arange(start, start + 5.0).view(5, 1, 1, 1))
              for start in (0, 5, 10)]
    regrouped = _regrouped(loader, 4)
    groups = [next(regrouped) for _ in range(5)]  # 20 rows: the 15 of one pass, then the loader again
    assert [g[0] for g in groups[:3]] == [[f"t{i}" for i in range(j, j + 4)] for j in (0, 4, 8)]
    assert groups[3][0] == ["t12", "t13", "t14", "t0"] and groups[3][1].flatten().tolist() == [12, 13, 14, 0]

    trainer = trainer_for(tiny_pipeline(num_unets=2), unets="in_turn")
    history = trainer.train(colour_batches(3, rows=5), num_train_steps=3, batch_size=4, grad_accum_every=2,
                            progress=False)
    assert [sorted(h) for h in history][0] == ["decoder", "loss", "prior", "unet1"]
    assert "unet2" in history[1] and "unet1" not in history[1]  # in turn
    assert trainer.parts["unet1"].step == 2 and trainer.parts["unet2"].step == 1 and trainer.parts["prior"].step == 3


def test_together_trains_every_unet_each_step():
    trainer = trainer_for(tiny_pipeline(num_unets=2), prior_loss_weight=0.0)
    history = trainer.train(colour_batches(2), num_train_steps=2, progress=False)
    assert "prior" not in trainer.parts and "prior" not in history[0]
    assert trainer.parts["unet1"].step == trainer.parts["unet2"].step == 2
    assert history[0]["decoder"] == pytest.approx((history[0]["unet1"] + history[0]["unet2"]) / 2)


def test_save_load_resumes_exactly(tmp_path):
    data = colour_batches(4, rows=4)
    straight = trainer_for(tiny_pipeline())
    straight.train(data, num_train_steps=4, batch_size=4, progress=False)

    first = trainer_for(tiny_pipeline())
    first.train(data, num_train_steps=2, batch_size=4, progress=False, checkpoint_path=tmp_path / "ckpt")
    rebuilt = rebuild_model(tmp_path / "ckpt", use_ema=True)  # the trained pipeline alone, with its EMA weights
    with first.ema_weights():
        assert all(torch.equal(a, b) for a, b in zip(first.dalle2.state_dict().values(), rebuilt.state_dict().values()))
    resumed = trainer_for(tiny_pipeline())
    resumed.load(tmp_path / "ckpt")
    assert resumed.step == 2
    resumed.train(data, num_train_steps=4, batch_size=4, progress=False)
    for (name, a), b in zip(straight.dalle2.state_dict().items(), resumed.dalle2.state_dict().values()):
        assert torch.equal(a, b), name
    for name in straight.parts:
        ema_a, ema_b = straight.parts[name].ema.ema_model, resumed.parts[name].ema.ema_model
        assert all(torch.equal(x, y) for x, y in zip(ema_a.parameters(), ema_b.parameters()))
    images = resumed.sample(["red"], seed=0, steps=2, prior_steps=2)
    assert images.shape == (1, 3, SIZE, SIZE)


def test_bad_arguments_are_explained():
    dalle2 = tiny_pipeline()
    with pytest.raises(TypeError, match="must be a DALLE2"):
        DALLE2Trainer(dalle2.decoder)
    with pytest.raises(ValueError, match="both 0"):
        DALLE2Trainer(dalle2, prior_loss_weight=0, decoder_loss_weight=0)
    with pytest.raises(ValueError, match="unets='all'"):
        DALLE2Trainer(dalle2, unets="all")
    trainer = trainer_for(dalle2)
    with pytest.raises(ValueError, match="2 texts but 3 images"):
        trainer(["red", "blue"], torch.rand(3, 3, SIZE, SIZE))
    with pytest.raises(RuntimeError, match="without a forward pass"):
        trainer.update()

"""EMA: one average per unet that follows ema-pytorch's formula, and sampling uses it."""

import pytest
import torch

from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from tests.trainers.helpers import EMBED_DIM, batch, tiny_decoder


def expected_decay(updates_done: int, *, beta: float, after: int, power: float = 2 / 3) -> float:
    """ema-pytorch's decay for the update that brings its counter to ``updates_done``."""
    epoch = max(updates_done - after - 1, 0)
    return 0.0 if epoch <= 0 else min(beta, 1 - (1 + epoch) ** -power)


def test_ema_follows_the_formula_and_differs_from_online():
    beta, after, every = 0.9, 2, 2
    trainer = DecoderTrainer(tiny_decoder(2), lr=1e-2, ema_beta=beta, ema_update_after_step=after,
                             ema_update_every=every)
    assert len([p for p in trainer.parts.values() if p.ema is not None]) == 2
    online = trainer.decoder.get_unet(1)
    images, embeds = batch(2, 16)
    expected = None
    for step in range(8):
        trainer(images, image_embed=embeds, unet_number=1)
        trainer.update(1)
        current = {n: p.detach().clone() for n, p in online.named_parameters()}
        if expected is None or (step % every == 0 and step <= after):
            expected = current  # first update and warm-up updates copy the online weights
        elif step % every == 0:
            d = expected_decay(step + 1, beta=beta, after=after)
            expected = {n: d * expected[n] + (1 - d) * current[n] for n in current}
    ema = dict(trainer.ema_unet(1).named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(ema[name], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(ema[n], p) for n, p in online.named_parameters())
    assert trainer.parts["unet2"].ema.step.item() == 0  # unet 2 never stepped


def test_sampling_uses_the_ema_unets_unless_asked_not_to():
    trainer = DecoderTrainer(tiny_decoder(1), lr=5e-2, ema_beta=0.5, ema_update_after_step=0, ema_update_every=1)
    images, embeds = batch(2, 8)
    for _ in range(3):
        trainer(images, image_embed=embeds)
        trainer.update()
    online = trainer.decoder.get_unet(1)
    embed = torch.randn(2, EMBED_DIM)

    def sample(**kwargs):
        return trainer.sample(image_embed=embed, steps=3, sampler="ddim",
                              generator=torch.Generator().manual_seed(0), **kwargs)

    online_before = {k: v.clone() for k, v in online.state_dict().items()}
    ema_images, online_images = sample(), sample(use_non_ema=True)
    assert trainer.decoder.get_unet(1) is online  # the online unet is back, with its own weights
    for key, value in online.state_dict().items():
        assert torch.equal(value, online_before[key]), key
    assert not torch.allclose(ema_images, online_images)
    trainer.decoder.unets[0] = trainer.ema_unet(1)
    try:
        torch.testing.assert_close(sample(use_non_ema=True), ema_images)
    finally:
        trainer.decoder.unets[0] = online


def test_use_ema_false_keeps_no_average():
    trainer = DecoderTrainer(tiny_decoder(1), use_ema=False)
    assert trainer.ema_unet(1) is None
    with pytest.raises(RuntimeError, match="without a forward pass"):
        trainer.update()


def test_prior_ema_is_the_running_average_of_the_online_network():
    """With warm-up off and an update every step, the EMA network after each step is d·ema + (1 - d)·online."""
    from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
    from tests.trainers.helpers import tiny_prior

    beta = 0.5
    trainer = DiffusionPriorTrainer(tiny_prior(), lr=5e-2, ema_beta=beta, ema_update_after_step=0,
                                    ema_update_every=1)
    online = trainer.diffusion_prior.net
    initial = {n: p.detach().clone() for n, p in online.named_parameters()}
    text, image = torch.randn(4, EMBED_DIM), torch.randn(4, EMBED_DIM)
    expected = None
    for step in range(5):
        trainer(text_embed=text, image_embed=image)
        trainer.update()
        current = {n: p.detach().clone() for n, p in online.named_parameters()}
        d = expected_decay(step + 1, beta=beta, after=0)
        expected = current if expected is None else {n: d * expected[n] + (1 - d) * current[n] for n in current}
    ema = dict(trainer.ema_diffusion_prior_net.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(ema[name], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(ema[n], initial[n]) for n in initial)      # it moved from the start
    assert any(not torch.allclose(ema[n], p) for n, p in online.named_parameters())  # and lags the online net


def test_prior_sampling_uses_the_ema_network_and_restores_the_online_one():
    from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
    from tests.trainers.helpers import tiny_prior

    trainer = DiffusionPriorTrainer(tiny_prior(), lr=5e-2, ema_beta=0.5, ema_update_after_step=0, ema_update_every=1)
    text, image = torch.randn(4, EMBED_DIM), torch.randn(4, EMBED_DIM)
    for _ in range(3):
        trainer(text_embed=text, image_embed=image)
        trainer.update()
    online = {k: v.clone() for k, v in trainer.diffusion_prior.net.state_dict().items()}

    def sample(**kwargs):
        torch.manual_seed(0)
        return trainer.sample(text_embed=text[:2], **kwargs)

    ema_embeds, online_embeds = sample(), sample(use_non_ema=True)
    assert not torch.allclose(ema_embeds, online_embeds)
    for key, value in trainer.diffusion_prior.net.state_dict().items():
        assert torch.equal(value, online[key]), key
    trainer.diffusion_prior.net.load_state_dict(trainer.ema_diffusion_prior_net.state_dict())
    torch.testing.assert_close(sample(use_non_ema=True), ema_embeds)

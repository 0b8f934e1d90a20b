"""AdamW parameter groups, learning-rate schedules and constructor validation of the trainers."""

import math

import pytest
import torch

from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from dalle2_pytorch.trainers.optim import LRSchedule, weight_decay_param_groups
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from tests.trainers.helpers import Regression, batch, tiny_decoder, tiny_prior


def test_no_weight_decay_on_biases_and_norms():
    model = Regression()
    decay, no_decay = weight_decay_param_groups(model, 0.1)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {"net.0.bias", "net.1.weight", "net.1.bias", "net.3.bias"}


def test_schedule_warmup_then_cosine():
    schedule = LRSchedule(warmup_steps=4, cosine_decay_max_steps=10)
    assert schedule.factor(0) == pytest.approx(0.25)
    assert schedule.factor(3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    assert schedule.factor(5) == pytest.approx(0.5)
    assert schedule.factor(10) == pytest.approx(0.0) and schedule.factor(50) == pytest.approx(0.0)
    assert LRSchedule().factor(123) == 1.0


def test_per_unet_settings_and_lr_schedule_applied():
    trainer = DecoderTrainer(tiny_decoder(2), lr=(1e-3, 2e-3), wd=(0.0, 0.05), eps=(1e-8, 1e-6),
                             warmup_steps=(2, None), use_ema=False)
    opt1, opt2 = trainer.parts["unet1"].optimizer, trainer.parts["unet2"].optimizer
    assert opt1.param_groups[0]["weight_decay"] == 0.0 and opt2.param_groups[0]["weight_decay"] == 0.05
    assert opt2.param_groups[0]["eps"] == 1e-6
    images, embeds = batch(2, 16)
    trainer(images, image_embed=embeds, unet_number=1)
    trainer.update(1)
    assert opt1.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # warm-up step 1 of 2
    trainer(images, image_embed=embeds, unet_number=2)
    trainer.update(2)
    assert opt2.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert trainer.num_steps_taken(1) == 1 and trainer.num_steps_taken(2) == 1


def test_only_some_unets_trained():
    decoder = tiny_decoder(2)
    decoder.get_unet(1).requires_grad_(False)
    trainer = DecoderTrainer(decoder, use_ema=False)
    assert trainer.trained_unet_numbers == (2,)
    before = [p.clone() for p in decoder.get_unet(1).parameters()]
    images, embeds = batch(2, 16)
    trainer(images, image_embed=embeds)  # the only trained unet needs no number
    trainer.update()
    assert all(torch.equal(a, b) for a, b in zip(before, decoder.get_unet(1).parameters()))
    with pytest.raises(ValueError, match="only trains unets"):
        trainer(images, image_embed=embeds, unet_number=1)
    assert DecoderTrainer(tiny_decoder(2), only_train_unets=[2], use_ema=False).trained_unet_numbers == (2,)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=(1e-4, 1e-4, 1e-4)), ValueError, "one per unet"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(ema_beta=1.5), ValueError, "ema_beta"),
    (dict(warmup_steps=0), ValueError, "warmup_steps"),
    (dict(mixed_precision="fp32"), ValueError, "mixed_precision"),
    (dict(ema_update_evry=10), TypeError, "ema_update_evry"),
    (dict(accelerator_mixed_precision="bf16"), TypeError, "accelerator_mixed_precision"),
    (dict(amp=True), TypeError, "amp"),
])
def test_bad_decoder_trainer_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DecoderTrainer(tiny_decoder(2), **kwargs)


def test_bad_prior_trainer_arguments():
    with pytest.raises(TypeError, match="ema_decay"):
        DiffusionPriorTrainer(tiny_prior(), ema_decay=0.9)
    with pytest.raises(TypeError, match="DiffusionPrior"):
        DiffusionPriorTrainer(tiny_decoder())
    with pytest.raises(ValueError, match="max_grad_norm"):
        DiffusionPriorTrainer(tiny_prior(), max_grad_norm=0)

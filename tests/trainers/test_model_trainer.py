"""ModelTrainer and the core behaviours it shares with every trainer: separate parts, fresh gradient accumulation,
integer buffers in the EMA, EMA weights swapped in and out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dalle2_pytorch.trainers import ModelTrainer


class TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gen = nn.Linear(3, 3)
        self.discr = nn.Linear(3, 1)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def gen_loss(self, x: torch.Tensor) -> torch.Tensor:
        self.steps_seen += 1
        return self.discr(self.gen(x)).mean()

    def discr_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.discr(x).pow(2).mean()


def make(**kwargs) -> ModelTrainer:
    torch.manual_seed(0)
    return ModelTrainer(TwoParts(), lr=1e-2, separate=("discr",), device="cpu", **kwargs)


def test_separate_parts_have_their_own_optimiser_lr_and_clipping():
    trainer = make(separate_lr=1e-3, max_grad_norm=0.1)
    model, discr = trainer.parts["model"], trainer.parts["discr"]
    assert {id(p) for p in discr.params} == {id(p) for p in trainer.model.discr.parameters()}
    assert not {id(p) for p in model.params} & {id(p) for p in discr.params}
    assert (model.base_lr, discr.base_lr) == (1e-2, 1e-3)
    assert model.max_grad_norm == discr.max_grad_norm == 0.1
    with pytest.raises(KeyError, match="trains \\['discr', 'model'\\]"):
        trainer(lambda: torch.zeros(()), "unet1")
    with pytest.raises(TypeError, match="sequence of submodule names"):
        ModelTrainer(TwoParts(), lr=1e-2, separate="discr")


@pytest.mark.parametrize("part", ["model", "discr"])
def test_every_part_takes_adams_normalised_first_step(part):
    """AdamW's first step moves each weight by its learning rate against the gradient's sign, however small the
    gradient (Adam's eps is negligible): the main part and a separate part alike."""
    trainer = make(separate_lr=1e-3)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    loss = (lambda: 1e-3 * trainer.model.gen_loss(x)) if part == "model" else \
        (lambda: 1e-3 * trainer.model.discr_loss(x))
    params = trainer.parts[part].params
    before = [p.detach().clone() for p in params]
    trainer(loss, part)
    grads = [p.grad.clone() for p in params]
    trainer.update(part)
    lr = 1e-2 if part == "model" else 1e-3
    for old, new, grad in zip(before, params, grads):
        moved = grad.abs() > 1e-6
        assert moved.any()
        torch.testing.assert_close((old - new.detach())[moved], lr * grad.sign()[moved], rtol=1e-3, atol=0)


def test_a_fresh_accumulation_drops_gradients_left_by_another_part():
    trainer = make()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    trainer(lambda: trainer.model.gen_loss(x))
    trainer.update()
    assert trainer.model.discr.weight.grad is not None  # the generator's loss reached the discriminator
    trainer(lambda: trainer.model.discr_loss(x), "discr")
    expected = torch.autograd.grad(trainer.model.discr_loss(x), trainer.model.discr.weight)[0]
    assert torch.equal(trainer.model.discr.weight.grad, expected)
    half = trainer(lambda: trainer.model.discr_loss(x) / 2, "discr")  # a second call accumulates
    assert half == pytest.approx(trainer.model.discr_loss(x).item() / 2)
    assert torch.allclose(trainer.model.discr.weight.grad, 1.5 * expected)


def test_the_ema_follows_integer_buffers_and_can_be_swapped_in():
    trainer = make(ema_beta=0.5)
    x = torch.randn(4, 3)
    for _ in range(3):
        trainer(lambda: trainer.model.gen_loss(x))
        trainer.update()
    ema = trainer.parts["model"].ema.ema_model
    assert int(ema.steps_seen) == int(trainer.model.steps_seen) == 3
    online = trainer.model.gen.weight.detach().clone()
    assert not torch.equal(online, ema.gen.weight)
    with pytest.raises(RuntimeError, match="inside"):
        with trainer.ema_weights():
            assert torch.equal(trainer.model.gen.weight, ema.gen.weight)
            raise RuntimeError("inside")
    assert torch.equal(trainer.model.gen.weight, online)
    assert trainer.has_ema and not make().has_ema

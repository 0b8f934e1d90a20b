"""``trainer.compile()``: torch.compile of the trained modules in place, with the same steps and checkpoints.

The fast tests compile with the ``aot_eager`` backend (dynamo's graph capture and AOT autograd, no code generation),
which exercises everything ``compile`` changes for this package; the inductor test is ``long`` (minutes of C++
builds on a CPU)."""

import pytest
import torch

from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer, ModelTrainer
from dalle2_pytorch.trainers.checkpoint import read_training_checkpoint
from dalle2_pytorch.trainers.compile import check_compile_mode, compile_in_place, is_compiled
from tests.factories import tiny_clip, tiny_vae
from tests.trainers.helpers import batch, tiny_decoder, tiny_prior


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _trainer() -> DecoderTrainer:
    return DecoderTrainer(tiny_decoder(), lr=1e-3, ema_beta=0.9, ema_update_after_step=0, ema_update_every=1,
                          mixed_precision="no")


def _steps(trainer: DecoderTrainer, steps: int = 3) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """Losses and gradients of ``steps`` training steps on fixed batches with fixed noise."""
    losses, grads = [], []
    for step in range(steps):
        images, embeds = batch(seed=step)
        torch.manual_seed(100 + step)  # the same diffusion times and noise in both runs
        losses.append(trainer(images, image_embed=embeds, unet_number=1))
        grads.append({n: p.grad.clone() for n, p in trainer.decoder.unets[0].named_parameters() if p.grad is not None})
        trainer.update(1)
    return losses, grads


def _assert_same_run(eager: DecoderTrainer, compiled: DecoderTrainer, backend: str, tmp_path,
                     rel: float = 1e-5, same_weights: bool = True, grad_steps: int = 3) -> None:
    """``rel``: losses and the gradients of the first ``grad_steps`` steps agree to this relative tolerance;
    ``same_weights``: the weights after three AdamW steps agree to fp32 rounding too (not so under inductor's
    reordered sums: AdamW's first steps move a parameter by about lr whatever the size of its gradient, so a
    rounding-size gradient flips sign and moves the weight by up to 2 lr, and later gradients follow)."""
    assert compiled.compile(backend=backend) == ["unets.0"]
    assert is_compiled(compiled.decoder.unets[0]) and not is_compiled(compiled.ema_unet(1))  # the EMA stays eager
    (eager_losses, eager_grads), (losses, grads) = _steps(eager), _steps(compiled)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the unet's calls went through dynamo
    assert losses == pytest.approx(eager_losses, rel=rel, abs=1e-6)
    for expected, got in zip(eager_grads[:grad_steps], grads[:grad_steps]):
        assert expected.keys() == got.keys() and len(got) > 10
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=10 * rel, rtol=10 * rel, msg=name)
    for (name, a), b in zip(compiled.decoder.state_dict().items(), eager.decoder.state_dict().values()):
        if same_weights:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    eager.save(tmp_path / "eager.safetensors")
    compiled.save(tmp_path / "compiled.safetensors")
    eager_tensors, _ = read_training_checkpoint(tmp_path / "eager.safetensors", "DecoderTrainer")
    tensors, _ = read_training_checkpoint(tmp_path / "compiled.safetensors", "DecoderTrainer")
    assert tensors.keys() == eager_tensors.keys()  # no "_orig_mod." anywhere: the same checkpoint format
    # resuming into another compiled trainer restores the weights, optimiser and EMA, and training goes on
    resumed = _trainer()
    resumed.compile(backend=backend)
    resumed.load(tmp_path / "compiled.safetensors")
    for name, value in resumed.training_state()[0].items():
        if not name.startswith("rng"):
            torch.testing.assert_close(value, tensors[name], msg=name)
    assert resumed.num_steps_taken(1) == 3
    assert _steps(resumed, 1)[0][0] == pytest.approx(_steps(compiled, 1)[0][0], rel=rel)


def test_a_compiled_decoder_trains_like_the_eager_one_and_saves_the_same_checkpoint(tmp_path):
    _assert_same_run(_trainer(), _trainer(), "aot_eager", tmp_path)


@pytest.mark.long
def test_inductor_compiled_decoder_trains_like_the_eager_one(tmp_path):
    # inductor fuses and reorders float sums: the same first step to fp32 rounding, and the same losses after
    _assert_same_run(_trainer(), _trainer(), "inductor", tmp_path, rel=1e-4, same_weights=False, grad_steps=1)


def test_compile_covers_every_trained_part_once():
    clip_trainer = ModelTrainer(tiny_clip(), lr=1e-3, ema_beta=0.9)
    assert clip_trainer.compile("max-autotune-no-cudagraphs") == [""]
    assert is_compiled(clip_trainer.model)
    vae = tiny_vae()
    # the discriminator is compiled as a part of the VAE around it, not a second time
    assert compile_in_place({"": vae, "discr": vae.discr}, True) == [""]
    assert is_compiled(vae) and not is_compiled(vae.discr)
    prior_trainer = DiffusionPriorTrainer(tiny_prior(), lr=1e-3)
    assert prior_trainer.compile() == ["net"] and is_compiled(prior_trainer.model.net)
    assert not is_compiled(prior_trainer.model)
    trainer = _trainer()
    assert trainer.compile(False) == [] and not is_compiled(trainer.decoder.unets[0])


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True), ("False", False),
                                             ("max-autotune", "max-autotune"), ("default", "default")])
def test_compile_settings_are_read(value, expected):
    assert check_compile_mode("compile", value) == expected


@pytest.mark.parametrize("value", ["fast", 1, None, "MAX-AUTOTUNE"])
def test_a_bad_compile_setting_names_the_modes(value):
    with pytest.raises(ValueError, match=r"compile=.*max-autotune-no-cudagraphs"):
        _trainer().compile(value)


def test_a_bad_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        _trainer().compile(backend="")
    with pytest.raises(ValueError, match="inductor mode"):  # a mode is never dropped silently
        _trainer().compile("max-autotune", backend="aot_eager")

"""Run by test_fsdp.py under ``torch.distributed.run`` with 2 CPU processes (gloo).

A tiny 2-unet decoder (one unet per step) and a tiny prior are trained STEPS steps twice from the same seeds and data:
plainly (gradients averaged by the trainer) and sharded with FSDP; losses and the full training states must agree to
fp32 rounding.  The FSDP trainers then save checkpoint folders, fresh FSDP trainers resume from them, and one more step
of both must agree bitwise.  accelerate turns FSDP on only for GPUs, so the worker sets the accelerate state an
``accelerate config`` with FSDP would give (distributed type and plugin) by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from dalle2_pytorch.trainers.checkpoint import load_checkpoint, save_checkpoint
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from tests.trainers.helpers import EMBED_DIM, batch, tiny_decoder, tiny_prior

STEPS = 3


def set_fsdp(accelerator: Accelerator, on: bool, **plugin: object) -> None:
    """What ``accelerate config`` with FSDP (fsdp_version 2) sets up on a GPU machine."""
    if on:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, **plugin)
    accelerator.state.distributed_type = DistributedType.FSDP if on else DistributedType.MULTI_CPU


def make_trainers(accelerator: Accelerator) -> tuple[DecoderTrainer, DiffusionPriorTrainer]:
    decoder = DecoderTrainer(tiny_decoder(2), accelerator=accelerator, lr=1e-3, warmup_steps=2, max_grad_norm=0.5,
                             ema_beta=0.9, ema_update_after_step=1, ema_update_every=1)
    prior = DiffusionPriorTrainer(tiny_prior(), accelerator=accelerator, lr=1e-3, max_grad_norm=1.0, ema_beta=0.9,
                                  ema_update_after_step=1, ema_update_every=1)
    return decoder, prior


def train(decoder: DecoderTrainer, prior: DiffusionPriorTrainer, steps: range, rank: int) -> list[float]:
    """Different data on every process; the losses draw noise and timesteps from the global RNG."""
    losses = []
    for step in steps:
        images, embeds = batch(4, 16, seed=10 * step + rank)
        for unet_number in (1, 2):  # one unet per optimiser step, as the decoder run does
            losses.append(decoder(images, image_embed=embeds, unet_number=unet_number, max_batch_size=3))
            decoder.update(unet_number)
        losses += train_prior(prior, range(step, step + 1), rank)
    return losses


def train_prior(prior: DiffusionPriorTrainer, steps: range, rank: int) -> list[float]:
    losses = []
    for step in steps:
        _, embeds = batch(4, 16, seed=10 * step + rank)
        text_embed = torch.randn(4, EMBED_DIM, generator=torch.Generator().manual_seed(1000 + 10 * step + rank))
        losses.append(prior(text_embed=text_embed, image_embed=embeds))
        prior.update()
    return losses


def sample(decoder: DecoderTrainer, prior: DiffusionPriorTrainer, rank: int) -> dict[str, torch.Tensor]:
    """Image embeddings from the prior, then images from the decoder (every process samples: FSDP gathers)."""
    text_embed = torch.randn(2, EMBED_DIM, generator=torch.Generator().manual_seed(rank))
    torch.manual_seed(7 + rank)
    image_embed = prior.sample(text_embed=text_embed, cond_scale=2.0)
    images = decoder.sample(image_embed=image_embed, cond_scale=2.0, steps=10)
    return {"image_embed": image_embed, "images": images}


def states(*trainers) -> dict[str, torch.Tensor]:
    """The full (gathered) training state of each trainer, RNG states left out."""
    out = {}
    for i, trainer in enumerate(trainers):
        tensors, _ = trainer.training_state()
        out.update({f"{i}.{k}": v for k, v in tensors.items() if not k.startswith("rng")})
    return out


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool) -> None:
    """Equal, or equal to fp32 rounding: the gradient of a bias just before a GroupNorm is rounding noise around 0,
    which AdamW normalises up to the learning rate's scale, hence atol 2e-5 (about 1e-6 elsewhere, at lr 1e-3)."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in a:
        same = torch.equal(a[key], b[key]) if exact else torch.allclose(a[key], b[key], rtol=1e-4, atol=2e-5)
        assert same, (key, (a[key].double() - b[key].double()).abs().max().item())


def plain_run(plain_state: Callable[[Accelerator], None]) -> tuple[Accelerator, int, tuple, list[float]]:
    """This process's accelerator (one of 2, gloo) and rank, and the plain run every mode is compared with: its
    trainers and losses (``plain_state`` sets the accelerate state of a plain run)."""
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    assert accelerator.num_processes == 2, accelerator.num_processes
    plain_state(accelerator)
    plain = make_trainers(accelerator)
    torch.manual_seed(100 + rank)
    return accelerator, rank, plain, train(*plain, range(STEPS), rank)


def check_prior_variant(accelerator: Accelerator, rank: int, set_mode: Callable[[bool], None], compiled: bool = False,
                        **settings: object) -> None:
    """A prior with the trainer ``settings`` trained 2 steps plainly (``set_mode(False)``) and in the mode under test
    (``set_mode(True)``; compiled there with the aot_eager backend when ``compiled``): losses and states must agree."""
    runs = []
    for on in (False, True):
        set_mode(on)
        prior = DiffusionPriorTrainer(tiny_prior(), accelerator=accelerator, lr=1e-3, **settings)
        if on and compiled:
            assert prior.compile(True, backend="aot_eager") == ["net"]
        torch.manual_seed(100 + rank)
        runs.append((train_prior(prior, range(2), rank), states(prior)))
    torch.testing.assert_close(torch.tensor(runs[1][0]), torch.tensor(runs[0][0]), rtol=1e-5, atol=1e-6)
    compare(runs[1][1], runs[0][1], exact=False)


def save_and_resume(folder: Path, accelerator: Accelerator, trained: tuple, plain: tuple, rank: int) -> tuple:
    """Checkpoint folders of ``trained`` (and files of ``plain``) under ``folder``; fresh trainers in the current
    accelerate state resume from them exactly: the same state, and one more step bitwise equal to going on.
    Returns the resumed trainers."""
    for name, trainer in zip(("decoder", "prior"), trained):
        save_checkpoint(folder / name, trainer, {"step": STEPS})
    for name, trainer in zip(("plain_decoder", "plain_prior"), plain):
        trainer.save(folder / f"{name}.safetensors")
    resumed = make_trainers(accelerator)
    for name, trainer in zip(("decoder", "prior"), resumed):
        load_checkpoint(folder / name, trainer)
    compare(states(*resumed), states(*trained), exact=True)
    restored = torch.get_rng_state()  # load_checkpoint gave this process back its RNG state at the save
    go_on = train(*trained, range(STEPS, STEPS + 1), rank)
    torch.set_rng_state(restored)
    assert train(*resumed, range(STEPS, STEPS + 1), rank) == go_on
    compare(states(*resumed), states(*trained), exact=True)
    return resumed


def main(folder: Path) -> None:
    accelerator, rank, plain, plain_losses = plain_run(lambda accelerator: set_fsdp(accelerator, False))

    set_fsdp(accelerator, True)
    sharded = make_trainers(accelerator)
    assert all(part.sharded for trainer in sharded for part in trainer.parts.values())
    unet = sharded[0].decoder.get_unet(1)
    local = sum(p.to_local().numel() for p in unet.parameters())
    assert local < sum(p.numel() for p in unet.parameters()), "unet 1 is not sharded"
    ema_local = sum(p.to_local().numel() for p in sharded[0].ema_unet(1).parameters())
    assert ema_local == local, "the EMA is not sharded like its unet"
    torch.manual_seed(100 + rank)
    sharded_losses = train(*sharded, range(STEPS), rank)
    torch.testing.assert_close(torch.tensor(sharded_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
    compare(states(*sharded), states(*plain), exact=False)

    compare(sample(*sharded, rank), sample(*plain, rank), exact=False)  # with the EMA weights, on every process

    # an auto-wrap policy from the accelerate config: inner sharded units inside each unet, same training
    set_fsdp(accelerator, True, auto_wrap_policy="transformer_based_wrap",
             transformer_cls_names_to_wrap=["ResnetBlock", "CausalTransformer"])
    wrapped = make_trainers(accelerator)
    units = sum(type(m).__name__.startswith("FSDP") for m in wrapped[0].decoder.get_unet(1).modules())
    assert units > 1, units
    torch.manual_seed(100 + rank)
    wrapped_losses = train(*wrapped, range(STEPS), rank)
    torch.testing.assert_close(torch.tensor(wrapped_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
    compare(states(*wrapped), states(*plain), exact=False)

    # bf16 autocast (the trainer's precision) and torch.compile work the same on sharded parts
    check_prior_variant(accelerator, rank, lambda on: set_fsdp(accelerator, on), mixed_precision="bf16")
    check_prior_variant(accelerator, rank, lambda on: set_fsdp(accelerator, on), compiled=True)

    # checkpoint folders of full state dicts; a fresh sharded trainer resumes from them exactly
    set_fsdp(accelerator, True)
    save_and_resume(folder, accelerator, sharded, plain, rank)

    if accelerator.is_main_process:
        print("FSDP_OK", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

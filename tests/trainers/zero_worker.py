"""Run by test_zero.py under ``torch.distributed.run`` with 2 CPU processes (gloo), DeepSpeed on its CPU accelerator.

The tiny 2-unet decoder (one unet per step, batches split in chunks, clipping, warm-up) and the tiny prior of
fsdp_worker.py are trained twice from the same seeds and data: plainly (gradients averaged by the trainer) and with a
DeepSpeed ZeRO engine per part, for ZeRO stages 1 and 2; losses and the full training states must agree to fp32
rounding.  The ZeRO-2 trainers then save checkpoint folders, fresh ZeRO-2 trainers resume from them (and from the
plain run's checkpoints), and one more step of both must agree bitwise; a step with a NaN loss on one process is
skipped on both.  accelerate selects DeepSpeed only for GPUs, so the worker sets the accelerate state a DeepSpeed
``accelerate config`` would give by hand.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType

from tests.trainers.fsdp_worker import (STEPS, check_prior_variant, compare, make_trainers, plain_run, sample,
                                       save_and_resume, states, train, train_prior)
from tests.trainers.helpers import EMBED_DIM


def set_zero(accelerator: Accelerator, stage: int | None, mixed_precision: str = "no") -> None:
    """What ``accelerate config`` with DeepSpeed (zero_stage ``stage``) sets up on a GPU machine; None: plain."""
    if stage is not None:
        plugin = DeepSpeedPlugin(zero_stage=stage)
        plugin.set_mixed_precision(mixed_precision)
        accelerator.state.deepspeed_plugins = plugin
    accelerator.state.distributed_type = DistributedType.DEEPSPEED if stage is not None else DistributedType.MULTI_CPU


def main(folder: Path) -> None:
    accelerator, rank, plain, plain_losses = plain_run(lambda accelerator: set_zero(accelerator, None))

    zero = {}
    for stage in (1, 2):
        set_zero(accelerator, stage)
        trainers = zero[stage] = make_trainers(accelerator)
        assert all(part.engine is not None for trainer in trainers for part in trainer.parts.values())
        engine = trainers[0].parts["unet1"].engine
        assert engine.zero_optimization_stage() == stage
        partition = engine.optimizer.single_partition_of_fp32_groups[0]
        assert partition.numel() < sum(p.numel() for p in trainers[0].parts["unet1"].param_groups[0])
        torch.manual_seed(100 + rank)
        losses = train(*trainers, range(STEPS), rank)
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
        compare(states(*trainers), states(*plain), exact=False)
    compare(sample(*zero[2], rank), sample(*plain, rank), exact=False)  # the EMA weights, whole on every process

    # bf16 autocast (the trainer's precision, from accelerate's mixed_precision) and torch.compile work the same
    check_prior_variant(accelerator, rank, lambda on: set_zero(accelerator, 2 if on else None, "bf16"),
                        mixed_precision="bf16")
    check_prior_variant(accelerator, rank, lambda on: set_zero(accelerator, 2 if on else None), compiled=True)

    # checkpoint folders in the single-process format; fresh ZeRO trainers resume from them exactly
    set_zero(accelerator, 2)
    resumed = save_and_resume(folder, accelerator, zero[2], plain, rank)
    from_plain = make_trainers(accelerator)  # a plain run's checkpoint resumes under ZeRO
    for name, trainer in zip(("plain_decoder", "plain_prior"), from_plain):
        trainer.load(folder / f"{name}.safetensors")
    compare(states(*from_plain), states(*plain), exact=True)

    # a NaN loss on one process: the step is skipped on both, the weights stay, the skip is counted on both
    prior = resumed[1]
    before = {k: v.clone() for k, v in prior.diffusion_prior.state_dict().items()}
    poison = prior.diffusion_prior.net.register_forward_hook(lambda module, args, out: out * float("nan"))
    if rank == 0:
        poison.remove()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prior(text_embed=torch.randn(4, EMBED_DIM), image_embed=torch.randn(4, EMBED_DIM))
        prior.update()
    poison.remove()
    assert any("non-finite" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert prior.parts["prior"].skipped_steps == 1 and prior.parts["prior"].step == STEPS + 1
    for key, value in prior.diffusion_prior.state_dict().items():
        assert torch.equal(value, before[key]), key

    # a checkpoint saved before any step puts a trained ZeRO trainer back to a fresh AdamW
    set_zero(accelerator, 2)
    fresh = make_trainers(accelerator)[1]
    fresh.save(folder / "fresh_prior.safetensors")
    trained_prior = zero[2][1]
    assert trained_prior.parts["prior"].step > 0
    trained_prior.load(folder / "fresh_prior.safetensors")
    compare(states(trained_prior), states(fresh), exact=True)
    losses = []
    for trainer in (trained_prior, fresh):
        torch.manual_seed(7 + rank)
        losses.append(train_prior(trainer, range(1), rank))
    assert losses[0] == losses[1]
    compare(states(trained_prior), states(fresh), exact=True)

    if accelerator.is_main_process:
        print("ZERO_OK", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

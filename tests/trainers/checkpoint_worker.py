"""Run in a subprocess by test_checkpoint.py: train, save, resume, or get killed while saving.

    python -m tests.trainers.checkpoint_worker full <dir>     N steps, save, M more; writes full.safetensors
    python -m tests.trainers.checkpoint_worker resume <dir>   fresh process: load, M steps; writes resumed.safetensors
    python -m tests.trainers.checkpoint_worker kill <dir>     save once, then block inside the next save
    python -m tests.trainers.checkpoint_worker kill_folder_write <dir>   the same with checkpoint folders, blocking
                                                                         while the new folder is being written
    python -m tests.trainers.checkpoint_worker kill_folder_swap <dir>    ... blocking between the swap's two renames
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from dalle2_pytorch.trainers.checkpoint import save_checkpoint
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
from tests.trainers.helpers import EMBED_DIM, batch, tiny_decoder, tiny_prior

FIRST_STEPS, MORE_STEPS = 3, 3


def make_trainers() -> tuple[DecoderTrainer, DiffusionPriorTrainer]:
    decoder = DecoderTrainer(tiny_decoder(2), lr=1e-3, warmup_steps=2, cosine_decay_max_steps=10,
                             ema_beta=0.9, ema_update_after_step=1, ema_update_every=1)
    prior = DiffusionPriorTrainer(tiny_prior(), lr=1e-3, ema_beta=0.9, ema_update_after_step=1, ema_update_every=1)
    return decoder, prior


def train_step(decoder: DecoderTrainer, prior: DiffusionPriorTrainer, step: int) -> list[float]:
    images, embeds = batch(4, 16, seed=step)  # the data position is the step number
    losses = []
    for unet_number in (1, 2):
        losses.append(decoder(images, image_embed=embeds, unet_number=unet_number, max_batch_size=3))
        decoder.update(unet_number)
    text_embed = torch.randn(4, EMBED_DIM, generator=torch.Generator().manual_seed(1000 + step))
    losses.append(prior(text_embed=text_embed, image_embed=embeds))
    prior.update()
    return losses


def final_state(decoder: DecoderTrainer, prior: DiffusionPriorTrainer, losses: list[float]) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, trainer in (("decoder", decoder), ("prior", prior)):
        state, _ = trainer.training_state()
        tensors.update({f"{name}.{k}": v.clone().contiguous() for k, v in state.items()})
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    tensors["next_noise"] = torch.randn(4)  # the global RNG continues identically too
    return tensors


def main(mode: str, folder: Path) -> None:
    torch.set_num_threads(1)
    decoder, prior = make_trainers()
    if mode == "full":
        losses = []
        for step in range(FIRST_STEPS):
            losses += train_step(decoder, prior, step)
        decoder.save(folder / "decoder.safetensors")
        prior.save(folder / "prior.safetensors")
        losses = []
        for step in range(FIRST_STEPS, FIRST_STEPS + MORE_STEPS):
            losses += train_step(decoder, prior, step)
        save_file(final_state(decoder, prior, losses), str(folder / "full.safetensors"))
    elif mode == "resume":
        decoder.load(folder / "decoder.safetensors")
        prior.load(folder / "prior.safetensors")
        losses = []
        for step in range(FIRST_STEPS, FIRST_STEPS + MORE_STEPS):
            losses += train_step(decoder, prior, step)
        save_file(final_state(decoder, prior, losses), str(folder / "resumed.safetensors"))
    elif mode == "kill":
        train_step(decoder, prior, 0)
        decoder.save(folder / "decoder.safetensors")
        print("SAVED", flush=True)
        train_step(decoder, prior, 1)

        def blocking_fsync(fd: int) -> None:  # the new file is written but not yet renamed into place
            print("IN_SAVE", flush=True)
            time.sleep(120)

        os.fsync = blocking_fsync
        decoder.save(folder / "decoder.safetensors")
    elif mode in ("kill_folder_write", "kill_folder_swap"):
        train_step(decoder, prior, 0)
        save_checkpoint(folder / "latest", decoder, {"step": 1})
        print("SAVED", flush=True)
        train_step(decoder, prior, 1)
        block_in_save(mode)
        save_checkpoint(folder / "latest", decoder, {"step": 2})
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def block_in_save(mode: str) -> None:
    """Make the next folder save hang (to be killed) while writing its files, or between its two renames."""
    if mode == "kill_folder_write":
        def blocking_fsync(fd: int) -> None:
            print("IN_SAVE", flush=True)
            time.sleep(120)

        os.fsync = blocking_fsync
        return
    rename = pathlib.Path.rename

    def rename_then_block(self: Path, target):  # the old folder has been moved aside; the new one is not in place
        result = rename(self, target)
        if str(target).endswith(".old"):
            print("IN_SAVE", flush=True)
            time.sleep(120)
        return result

    pathlib.Path.rename = rename_then_block


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

"""Run by test_distributed.py under ``torch.distributed.run`` with 2 CPU processes (gloo).

Each process trains unet 2 of a 2-unet cascade (unet 1 untouched) on different data; after the step
every process must hold the same weights, which needs the gradients averaged across processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from tests.trainers.helpers import batch, tiny_decoder


def main(folder: Path) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    trainer = DecoderTrainer(tiny_decoder(2), accelerator=accelerator, only_train_unets=(2,),
                             ema_update_after_step=0, ema_update_every=1)
    before = torch.cat([p.detach().reshape(-1).clone() for p in trainer.decoder.get_unet(2).parameters()])
    images, embeds = batch(4, 16, seed=accelerator.process_index)  # different data on every process
    trainer(images, image_embed=embeds, unet_number=2, max_batch_size=2)
    trainer.update(2)
    after = torch.cat([p.detach().reshape(-1) for p in trainer.decoder.get_unet(2).parameters()])
    gathered = accelerator.gather(after[None])
    assert accelerator.num_processes == 2, accelerator.num_processes
    assert not torch.equal(before, after)
    assert torch.equal(gathered[0], gathered[1]), "weights differ across processes"
    trainer.save(folder / "ddp.safetensors")
    if accelerator.is_main_process:
        print("DDP_OK", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

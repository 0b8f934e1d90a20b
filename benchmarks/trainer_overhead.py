"""Trainer overhead: a DecoderTrainer / DiffusionPriorTrainer step against a bare training step.

The bare step is ``loss = model(...); loss.backward(); AdamW.step(); zero_grad()``.  The trainer step
is ``trainer(...); trainer.update()`` with the trainer's defaults: EMA (updated every 10 steps),
gradient-norm clipping (decoder) or a gradient-norm finiteness check (prior), the learning-rate
schedule and the non-finite-loss check.  Bare and trainer steps alternate so that machine noise hits
both alike; the script prints median wall and CPU seconds per step and the overhead in percent.

    python benchmarks/trainer_overhead.py            # 64 px unet, 512-d prior (a few minutes on 2 CPU cores)
    python benchmarks/trainer_overhead.py --quick    # tiny sizes, seconds (numbers mean little)
    python benchmarks/trainer_overhead.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Callable

import torch
from accelerate import Accelerator

from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer

SIZES = {
    "full": dict(unet_dim=64, dim_mults=(1, 2, 4), image_size=64, embed_dim=512, decoder_batch=8,
                 prior_dim=512, prior_depth=6, prior_batch=64, steps=12),
    "quick": dict(unet_dim=16, dim_mults=(1, 2), image_size=16, embed_dim=32, decoder_batch=4,
                  prior_dim=32, prior_depth=2, prior_batch=16, steps=6),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, bare_step: Callable[[], None], trainer_step: Callable[[], None], steps: int,
            device: torch.device) -> dict:
    for _ in range(2):  # warm-up (allocator, kernels, optimiser state)
        bare_step()
        trainer_step()
    bare, trained = [], []
    for _ in range(steps):
        bare.append(timed(bare_step, device))
        trained.append(timed(trainer_step, device))
    result = {"workload": name, "steps": steps}
    for label, index in (("wall", 0), ("cpu", 1)):
        b = statistics.median(t[index] for t in bare)
        t = statistics.median(t[index] for t in trained)
        result.update({f"bare_{label}_s": round(b, 4), f"trainer_{label}_s": round(t, 4),
                       f"overhead_{label}_pct": round(100 * (t / b - 1), 2)})
    return result


def decoder_workload(s: dict, device: torch.device) -> dict:
    torch.manual_seed(0)
    unet = Unet(dim=s["unet_dim"], dim_mults=s["dim_mults"], image_embed_dim=s["embed_dim"], cond_dim=s["unet_dim"])
    decoder = Decoder(unet=unet, image_size=s["image_size"], timesteps=1000).to(device)
    bare_model = copy.deepcopy(decoder)
    optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-4, weight_decay=1e-2, betas=(0.9, 0.99))
    trainer = DecoderTrainer(decoder, lr=1e-4, accelerator=Accelerator(cpu=device.type == "cpu"))
    images = torch.rand(s["decoder_batch"], 3, s["image_size"], s["image_size"], device=device)
    embeds = torch.nn.functional.normalize(torch.randn(s["decoder_batch"], s["embed_dim"], device=device), dim=-1)

    def bare_step() -> None:
        loss = bare_model(images, image_embed=embeds)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def trainer_step() -> None:
        trainer(images, image_embed=embeds)
        trainer.update()

    return compare("decoder_train", bare_step, trainer_step, s["steps"], device)


def prior_workload(s: dict, device: torch.device) -> dict:
    torch.manual_seed(0)
    net = DiffusionPriorNetwork(dim=s["prior_dim"], depth=s["prior_depth"], dim_head=64, heads=8)
    prior = DiffusionPrior(net, image_embed_dim=s["prior_dim"], timesteps=1000,
                           condition_on_text_encodings=False).to(device)
    bare_model = copy.deepcopy(prior)
    optimizer = torch.optim.AdamW(bare_model.parameters(), lr=3e-4, weight_decay=1e-2, betas=(0.9, 0.99), eps=1e-6)
    trainer = DiffusionPriorTrainer(prior, lr=3e-4, accelerator=Accelerator(cpu=device.type == "cpu"))
    rows = s["prior_batch"]
    text_embed = torch.nn.functional.normalize(torch.randn(rows, s["prior_dim"], device=device), dim=-1)
    image_embed = torch.nn.functional.normalize(torch.randn(rows, s["prior_dim"], device=device), dim=-1)

    def bare_step() -> None:
        loss = bare_model(text_embed=text_embed, image_embed=image_embed)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def trainer_step() -> None:
        trainer(text_embed=text_embed, image_embed=image_embed)
        trainer.update()

    return compare("prior_train", bare_step, trainer_step, s["steps"], device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels unevenly; keep them out of the comparison
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    sizes = SIZES["quick" if args.quick else "full"]
    for workload in (decoder_workload, prior_workload):
        print(json.dumps({**workload(sizes, device), "device": str(device), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

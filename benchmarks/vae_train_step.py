"""Time one VQGanVAETrainer step (generator update + discriminator update) on this machine.

Default: the seed README's VAE (dim 32, layers 3, layer_mults (1, 2, 4), codebook 512x256) on 128 px images,
batch 8, with the PatchGAN discriminator, the gradient penalty every 4 steps and the download-free
``perceptual='random'`` feature net.  ``--quick`` runs a tiny model so the script can be smoke-tested in seconds.

    .venv/bin/python benchmarks/vae_train_step.py [--quick] [--steps N] [--threads T] [--device D] [--amp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dalle2_pytorch.vae import VQGanVAE  # noqa: E402
from dalle2_pytorch import VQGanVAETrainer  # noqa: E402

FULL = dict(vae=dict(dim=32, image_size=128, layers=3, layer_mults=(1, 2, 4)), batch=8)
QUICK = dict(vae=dict(dim=8, image_size=16, layers=2, vq_codebook_dim=8, vq_codebook_size=16, attn_heads=2,
                      attn_dim_head=8, discr_layers=2), batch=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after two warm-up steps")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    torch.manual_seed(0)
    device = torch.device(args.device)
    vae = VQGanVAE(perceptual="random", **cfg["vae"]).to(device)
    size = cfg["vae"]["image_size"]
    images = torch.rand(cfg["batch"] * 4, 3, size, size) * 2 - 1
    batches = list(images.split(cfg["batch"]))
    with tempfile.TemporaryDirectory() as results:
        trainer = VQGanVAETrainer(vae, data=batches, num_train_steps=10**9, amp=args.amp, device=device,
                                  apply_grad_penalty_every=4, save_results_every=10**9, save_model_every=10**9,
                                  results_folder=results)

        def step() -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        step(), step()  # warm-up: k-means codebook init, allocator
        times = [step() for _ in range(args.steps)]
    params = sum(p.numel() for p in vae.parameters())
    print(f"VQGanVAE train step ({'quick' if args.quick else 'full'}, {device.type}"
          f"{', bf16 autocast' if args.amp else ''}, {torch.get_num_threads()} threads): {cfg}, "
          f"{params / 1e6:.2f}M params (incl. discriminator)")
    print(f"  median {statistics.median(times) * 1000:.1f} ms/step over {len(times)} steps "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); "
          f"{cfg['batch'] / statistics.median(times):.1f} images/s")


if __name__ == "__main__":
    main()

"""Time one CLIP training step (forward + backward + AdamW) on this machine's CPU.

Default: the README-sized model (dims 512, depth 6 both towers, 8 heads of 64, 224 px images with
32 px patches, 256-token texts), batch 16, plain contrastive loss. ``--quick`` runs a tiny model so
the script can be smoke-tested in seconds.

    .venv/bin/python benchmarks/clip_train_step.py [--quick] [--steps N] [--threads T] [--options]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dalle2_pytorch.clip.model import CLIP  # noqa: E402

FULL = dict(dim=512, depth=6, image_size=224, patch_size=32, text_len=256, batch=16)
QUICK = dict(dim=32, depth=1, image_size=32, patch_size=8, text_len=16, batch=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--options", action="store_true",
                        help="also switch on FILIP, DCL, extra projection, MLM and SimCLR (the seed README's set)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    torch.manual_seed(0)
    options = dict(use_all_token_embeds=True, decoupled_contrastive_learning=True, extra_latent_projection=True,
                   use_mlm=True, use_visual_ssl=True, visual_ssl_type="simclr") if args.options else {}
    clip = CLIP(dim_text=cfg["dim"], dim_image=cfg["dim"], dim_latent=cfg["dim"], num_text_tokens=49408,
                text_enc_depth=cfg["depth"], text_seq_len=cfg["text_len"], text_heads=8, text_dim_head=64,
                visual_enc_depth=cfg["depth"], visual_heads=8, visual_dim_head=64,
                visual_image_size=cfg["image_size"], visual_patch_size=cfg["patch_size"], **options).to(args.device)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-4)
    text = torch.randint(1, 49408, (cfg["batch"], cfg["text_len"]), device=args.device)
    images = torch.rand(cfg["batch"], 3, cfg["image_size"], cfg["image_size"], device=args.device)
    synchronize = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)

    def step() -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = clip(text, images, return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize()
        return time.perf_counter() - start, time.process_time() - cpu_start

    step()  # warm-up
    measured = [step() for _ in range(args.steps)]
    times, cpu_times = [m[0] for m in measured], [m[1] for m in measured]
    params = sum(p.numel() for p in clip.parameters())
    print(f"CLIP train step ({'quick' if args.quick else 'full'}{', options' if args.options else ''}): {cfg}, "
          f"{params / 1e6:.1f}M params, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"step seconds: {', '.join(f'{t:.3f}' for t in times)}; median {statistics.median(times):.3f} s, "
          f"{cfg['batch'] / statistics.median(times):.2f} pairs/s")
    # CPU seconds (all threads) per step: on a shared, busy machine wall time overstates the cost, CPU time does not
    print(f"process CPU seconds per step: median {statistics.median(cpu_times):.3f} "
          f"(over {torch.get_num_threads()} threads: {statistics.median(cpu_times) / torch.get_num_threads():.3f} s)")


if __name__ == "__main__":
    main()

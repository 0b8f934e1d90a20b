"""CPU seconds and wall seconds of training steps with 1 and 2 torch threads (the `--threads` default).

Trains the `dalle2 train pipeline` small preset's CLIP and decoder (32 px) on random batches for a few steps, each
thread count in a fresh interpreter, and prints one JSON line per (model, threads).  Run by hand:
``python benchmarks/threads_cost.py [--steps 20] [--decoder-size 32|64] [--quick]``; results are recorded in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(model: str, threads: int, steps: int, image_size: int = 32) -> dict:
    import torch

    from dalle2_pytorch.runs.configs import config_from_dict
    from dalle2_pytorch.runs.pipeline_presets import clip_config, decoder_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    captions = ["a red circle", "a blue square"] * 18
    if model == "clip":
        config = config_from_dict({**clip_config("small", 32, ".", captions), "data": {"source": "toy"}})
    else:
        config = config_from_dict({**decoder_config("small", image_size, ".", 2304), "data": {"source": "toy"}})
        config.model.unconditional = True   # no CLIP needed: the same unets' cost, without the image embedding
    network = config.model.create()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    size = 32 if model == "clip" else image_size
    images = torch.rand(36 if model == "clip" else 32, 3, size, size)
    from dalle2_pytorch.clip.tokenizer import tokenize

    tokens = tokenize(captions, context_length=16)

    def step(i: int) -> None:
        loss = network(tokens, images, return_loss=True) if model == "clip" else \
            network(images, unet_number=1 + i % 2)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(0)   # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(i)
    return {"model": model, "threads": threads, "steps": steps, "image_size": size,
            "cpu_s_per_step": round((time.process_time() - cpu) / steps, 4),
            "wall_s_per_step": round((time.perf_counter() - wall) / steps, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 steps, one thread count: a smoke test")
    parser.add_argument("--decoder-size", type=int, default=32, choices=[32, 64], help="decoder image size")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.decoder_size)))
        return
    counts = (1,) if args.quick else (1, 2)
    steps = 2 if args.quick else args.steps
    for model in ("clip", "decoder"):
        for threads in counts:
            out = subprocess.run([sys.executable, __file__, "--steps", str(steps), "--decoder-size",
                                  str(args.decoder_size), "--one", model, str(threads)],
                                 check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

"""How close a decoder training step gets to this machine's practical ceiling (fp32 matmul GFLOP/s).

1. Ceiling: an fp32 (n x n) @ (n x n) matmul repeated, 2 * n^3 FLOPs each, on ``--threads`` threads.
2. Decoder step: the FLOPs of one forward + backward of the side-by-side benchmark's decoder (Unet dim 64,
   dim_mults (1, 2, 4, 8), 64 px, batch 8; sizes from ``common.py``) counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, attention), then timed with AdamW steps.
3. Ratio = achieved decoder GFLOP/s / matmul GFLOP/s; also against a 3x3 convolution's nominal GFLOP/s, since
   convolutions carry ~97 % of the step's FLOPs and oneDNN runs them faster than a GEMM of the same FLOP count.

Both are reported per wall second and per CPU second of this process (all threads).  Measure on a quiet machine:
under load the wall numbers fall, and the CPU-time numbers do too (OpenMP threads spin while waiting for a
descheduled partner), the many small ops of a training step much more than one big matmul.
Run: ``python benchmarks/matmul_ceiling.py [--quick] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import decoder_kwargs, sizes_for, timed_steps, unet_kwargs  # noqa: E402


def matmul_gflops(n: int, repeats: int) -> dict[str, float]:
    """Median wall and CPU GFLOP/s of an fp32 n x n matmul (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    wall, cpu = timed_steps(lambda: torch.mm(a, b, out=out), warmup=1, timed=repeats)
    flops = 2 * n ** 3
    return {"n": n, "gflops_wall": flops / statistics.median(wall) / 1e9,
            "gflops_per_cpu_second": flops / statistics.median(cpu) / 1e9}


def conv_gflops(channels: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Nominal (direct-convolution count) GFLOP/s of a 3x3 conv; oneDNN may use cheaper algorithms (Winograd),
    so this can exceed the matmul ceiling, and it is the fairer yardstick for a conv-dominated Unet."""
    x, w = torch.randn(batch, channels, size, size), torch.randn(channels, channels, 3, 3)
    wall, cpu = timed_steps(lambda: torch.nn.functional.conv2d(x, w, padding=1), warmup=1, timed=repeats)
    flops = 2 * batch * channels * channels * 9 * size * size
    return {"shape": [batch, channels, size, size], "gflops_wall": flops / statistics.median(wall) / 1e9,
            "gflops_per_cpu_second": flops / statistics.median(cpu) / 1e9}


def decoder_step_gflops(quick: bool, timed: int) -> dict[str, float]:
    """FLOPs of one decoder training step, and its median wall and CPU GFLOP/s."""
    from dalle2_pytorch.decoder import Decoder, Unet

    sizes = sizes_for(quick)
    torch.manual_seed(0)
    decoder = Decoder(unet=Unet(**unet_kwargs(sizes)), **decoder_kwargs(sizes)).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    images = torch.rand(sizes.decoder_batch, 3, sizes.image_size, sizes.image_size)
    embeds = torch.nn.functional.normalize(torch.randn(sizes.decoder_batch, sizes.image_embed_dim), dim=-1)

    def step() -> None:
        loss = decoder(images, image_embed=embeds)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        decoder(images, image_embed=embeds).backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    by_op = {str(op): count for op, count in counter.get_flop_counts().get("Global", {}).items()}
    wall, cpu = timed_steps(step, warmup=1, timed=timed)
    return {"flops_per_step": flops, "gflops_wall": flops / statistics.median(wall) / 1e9,
            "gflops_per_cpu_second": flops / statistics.median(cpu) / 1e9,
            "seconds_per_step_wall": statistics.median(wall), "cpu_seconds_per_step": statistics.median(cpu),
            "parameters": sum(p.numel() for p in decoder.parameters()),
            "flop_share": {op: round(count / flops, 3) for op, count in sorted(by_op.items(), key=lambda x: -x[1])}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (numbers mean nothing)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--matmul-size", type=int, default=None, help="n of the n x n matmul (default 2048)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.matmul_size or (256 if args.quick else 2048)
    ceiling = matmul_gflops(n, repeats=3 if args.quick else 10)
    conv = conv_gflops(32 if args.quick else 256, 8 if args.quick else 16, 2 if args.quick else 8,
                       repeats=3 if args.quick else 10)
    step = decoder_step_gflops(args.quick, timed=1 if args.quick else 3)
    result = {"matmul": ceiling, "conv3x3": conv, "decoder_step": step,
              "ratio_to_conv_wall": step["gflops_wall"] / conv["gflops_wall"],
              "ratio_wall": step["gflops_wall"] / ceiling["gflops_wall"],
              "ratio_cpu_time": step["gflops_per_cpu_second"] / ceiling["gflops_per_cpu_second"],
              "threads": args.threads, "quick": args.quick, "torch": torch.__version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
              "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"matmul fp32 {n}x{n}, {args.threads} threads: {ceiling['gflops_wall']:.1f} GFLOP/s wall, "
          f"{ceiling['gflops_per_cpu_second']:.1f} GFLOP per CPU-second")
    print(f"conv 3x3 {conv['shape']}: {conv['gflops_wall']:.1f} GFLOP/s wall (nominal direct-conv FLOPs)")
    print(f"decoder training step: {step['flops_per_step'] / 1e9:.1f} GFLOP (forward + backward), "
          f"{step['seconds_per_step_wall']:.2f} s wall ({step['cpu_seconds_per_step']:.2f} CPU s) -> "
          f"{step['gflops_wall']:.1f} GFLOP/s wall, {step['gflops_per_cpu_second']:.1f} GFLOP per CPU-second")
    print(f"ratio to the matmul ceiling: {result['ratio_wall']:.2f} (wall), {result['ratio_cpu_time']:.2f} (CPU time); "
          f"to the 3x3 conv rate: {result['ratio_to_conv_wall']:.2f} (wall)")
    print(f"FLOP share by op: {step['flop_share']}")
    print(f"load average during the run: {result['load_average']}")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

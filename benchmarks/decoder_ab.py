"""Interleaved A/B timing of decoder training-step variants against the default, in one process.

Every variant builds the same decoder as ``compare.py``'s ``decoder_train`` (same seed, model and batch) with its
own AdamW; the steps then run round-robin (A B C ... A B C ...), so a change in the machine's load hits all
variants alike. Each round gives each variant's CPU-time ratio to the baseline of the same round; the reported
speed-up is the median of those ratios (above 1: the variant is faster). Process CPU time is used because the
machines this runs on are often shared; on a quiet machine the wall ratios are printed too.

Variants (each changes one thing):
  baseline        the default configuration a user gets
  keep_norm       ``Unet(recompute_norm_in_backward=False)``: store the norm/FiLM/SiLU maps, no recompute
  channels_last   model and input images in ``torch.channels_last`` memory format
  adamw_foreach   ``AdamW(foreach=True)``        adamw_fused     ``AdamW(fused=True)``
  bf16_autocast   forward under ``torch.autocast("cpu", torch.bfloat16)``
  compile         ``unet.compile()`` (torch.compile in place; compile time reported separately, not in the ratio)
Run: ``python benchmarks/decoder_ab.py --variants baseline channels_last --rounds 6 [--threads 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import decoder_kwargs, sizes_for, unet_kwargs  # noqa: E402

VARIANTS = ("baseline", "keep_norm", "channels_last", "adamw_foreach", "adamw_fused", "bf16_autocast", "compile")


def build(variant: str, quick: bool):
    """A zero-argument training step for ``variant`` and the seconds its set-up (compilation) took."""
    from dalle2_pytorch.decoder import Decoder, Unet

    s = sizes_for(quick)
    torch.manual_seed(0)
    decoder = Decoder(unet=Unet(**unet_kwargs(s)), **decoder_kwargs(s)).train()
    images = torch.rand(s.decoder_batch, 3, s.image_size, s.image_size)
    embeds = F.normalize(torch.randn(s.decoder_batch, s.image_embed_dim), dim=-1)
    opt_kwargs = {"adamw_foreach": {"foreach": True}, "adamw_fused": {"fused": True}}.get(variant, {})
    if variant == "channels_last":
        decoder = decoder.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if variant == "keep_norm":
        decoder.unets[0] = decoder.unets[0].with_flags(recompute_norm_in_backward=False)
    if variant == "compile":
        decoder.unets[0].compile()  # in place: the state dict keeps its keys (no "_orig_mod." prefix)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4, **opt_kwargs)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16_autocast"):
            loss = decoder(images, image_embed=embeds.clone(), unet_number=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    start = time.perf_counter()
    step()  # warm-up (and compilation)
    setup = time.perf_counter() - start
    step()
    return step, setup


def run(variants: list[str], rounds: int, quick: bool) -> dict:
    steps, setup = {}, {}
    for v in variants:
        steps[v], setup[v] = build(v, quick)
    cpu = {v: [] for v in variants}
    wall = {v: [] for v in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))  # ABC CBA: no variant always first
        for v in order:
            c, w = time.process_time(), time.perf_counter()
            steps[v]()
            cpu[v].append(time.process_time() - c)
            wall[v].append(time.perf_counter() - w)
    base = variants[0]
    out = {}
    for v in variants:
        out[v] = {"cpu_s_median": statistics.median(cpu[v]), "wall_s_median": statistics.median(wall[v]),
                  "speedup_cpu": statistics.median(b / x for b, x in zip(cpu[base], cpu[v])),
                  "speedup_wall": statistics.median(b / x for b, x in zip(wall[base], wall[v])),
                  "first_two_steps_wall_s": setup[v]}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "channels_last"], choices=VARIANTS,
                        help="the first one is the baseline the others are compared with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (numbers mean nothing)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--peak-rss", action="store_true",
                        help="instead: run only the first variant for 3 steps and print this process's peak RSS")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.peak_rss:
        import resource
        step, _ = build(args.variants[0], args.quick)
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.variants[0]}: peak RSS {peak:.0f} MB")
        return {args.variants[0]: {"peak_rss_mb": peak}}
    import os
    load = os.getloadavg()
    out = run(args.variants, args.rounds, args.quick)
    print(f"{args.threads} threads, {args.rounds} rounds, load average {load[0]:.1f} -> {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}")
    print("| variant | CPU s/step | wall s/step | speed-up vs first (CPU, median of ratios) | (wall) | warm-up s |")
    print("|---|---|---|---|---|---|")
    for v, m in out.items():
        print(f"| {v} | {m['cpu_s_median']:.3f} | {m['wall_s_median']:.3f} | {m['speedup_cpu']:.3f}x | "
              f"{m['speedup_wall']:.3f}x | {m['first_two_steps_wall_s']:.1f} |")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "load": load,
                                             "torch": torch.__version__, "variants": out}, indent=1))
    return out


if __name__ == "__main__":
    main()

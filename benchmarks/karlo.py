"""Karlo's default schedule (DDPM 25 prior + 25 decoder + 7 super-res steps) against our samplers at fewer steps.

Measured: wall and CPU time of one text -> image run on tiny random Karlo-layout components
(``dalle2_pytorch.karlo.build_tiny_components``: 8 px decoder, 16 px super-resolution), through diffusers'
``UnCLIPPipeline`` (Karlo's default, the baseline) and through our ``KarloPipeline`` with each schedule.  Tiny models
show the loop's overhead and the step counts, not real-size cost, so the real size is estimated: FLOPs of one
evaluation of each real-size Karlo network (counted with ``torch.utils.flop_counter`` on the ``meta`` device, no
weights needed) times the evaluations each schedule makes (classifier-free guidance doubles prior and decoder).

Run: ``python benchmarks/karlo.py [--quick] [--repeats N]``; prints Markdown tables and writes
``benchmarks/results/karlo.json``.  Needs the ``karlo`` extra (diffusers, transformers).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dalle2_pytorch.karlo import KarloPipeline, build_tiny_components, save_components

PROMPTS = ["a red cat", "a blue square"]
# (label, prior (sampler, steps), decoder (sampler, steps), super-res (sampler, steps))
SCHEDULES = [
    ("Karlo default: DDPM 25 + 25 + 7", ("ddpm", 25), ("ddpm", 25), ("ddpm", 7)),
    ("DPM-Solver++(2M) 20 + 20 + 7", ("dpmpp_2m", 20), ("dpmpp_2m", 20), ("dpmpp_2m", 7)),
    ("DPM-Solver++(2M) 15 + 15 + 7", ("dpmpp_2m", 15), ("dpmpp_2m", 15), ("dpmpp_2m", 7)),
    ("DPM-Solver++(2M) 15 + 15 + 5", ("dpmpp_2m", 15), ("dpmpp_2m", 15), ("dpmpp_2m", 5)),
    ("DPM-Solver++(2M) 10 + 10 + 4", ("dpmpp_2m", 10), ("dpmpp_2m", 10), ("dpmpp_2m", 4)),
    ("DDIM 10 + 10 + 4", ("ddim", 10), ("ddim", 10), ("ddim", 4)),
]
GUIDED = (2, 2, 1)  # evaluations per step under guidance: prior, decoder, super-res (not guided)


def timed(run: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``repeats`` runs after one warm-up."""
    run()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": sorted(walls)[len(walls) // 2], "cpu_s": sorted(cpus)[len(cpus) // 2]}


def evaluations(schedule: tuple) -> list[int]:
    """Network evaluations per stage (the batch of a guided stage is doubled: counted as 2)."""
    return [steps * factor for (_, steps), factor in zip(schedule[1:], GUIDED)]


def real_size_flops() -> dict[str, float]:
    """FLOPs of one evaluation (one image) of each real-size Karlo network, on the meta device.

    The configurations are those of ``kakaobrain/karlo-v1-alpha`` as recalled (no network here to read them): they
    give 1.02 B (prior), 885 M (decoder) and 568 M (each super-resolution unet) parameters."""
    import diffusers
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        prior = diffusers.PriorTransformer(num_attention_heads=32, attention_head_dim=64, num_layers=20,
                                           embedding_dim=768, num_embeddings=77)
        attn = ("SimpleCrossAttnDownBlock2D",) * 3
        decoder = diffusers.UNet2DConditionModel(
            sample_size=64, in_channels=3, out_channels=6, layers_per_block=3, block_out_channels=(320, 640, 960, 1280),
            down_block_types=("ResnetDownsampleBlock2D", *attn),
            up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=1536, attention_head_dim=64,
            resnet_time_scale_shift="scale_shift", class_embed_type="identity")
        super_res = diffusers.UNet2DModel(sample_size=256, in_channels=6, out_channels=3, layers_per_block=3,
                                          block_out_channels=(320, 640, 960, 960),
                                          down_block_types=("ResnetDownsampleBlock2D",) * 4,
                                          up_block_types=("ResnetUpsampleBlock2D",) * 4,
                                          resnet_time_scale_shift="scale_shift")
        t = torch.tensor([500])
        calls = {
            "prior": lambda: prior(torch.randn(1, 768), timestep=t, proj_embedding=torch.randn(1, 768),
                                   encoder_hidden_states=torch.randn(1, 77, 768),
                                   attention_mask=torch.ones(1, 77, dtype=torch.bool)),
            "decoder": lambda: decoder(sample=torch.randn(1, 3, 64, 64), timestep=t,
                                       encoder_hidden_states=torch.randn(1, 81, 1536), class_labels=torch.randn(1, 1280),
                                       attention_mask=torch.ones(1, 81, dtype=torch.bool)),
            "super_res": lambda: super_res(sample=torch.randn(1, 6, 256, 256), timestep=t),
        }
        out = {}
        for name, call in calls.items():
            with FlopCounterMode(display=False) as counter:
                call()
            out[name] = float(counter.get_total_flops())
    out["params"] = {name: sum(p.numel() for p in model.parameters())
                     for name, model in (("prior", prior), ("decoder", decoder), ("super_res", super_res))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, two schedules (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "karlo.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    schedules = SCHEDULES[:2] if args.quick else SCHEDULES

    from diffusers import UnCLIPPipeline

    components = build_tiny_components(seed=0)
    reference = UnCLIPPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as folder:
        ours = KarloPipeline.from_pretrained(save_components(components, Path(folder) / "karlo"))
    rows = [{"label": "diffusers UnCLIPPipeline (Karlo default)", "evaluations": evaluations(SCHEDULES[0]),
             **timed(lambda: reference(PROMPTS, generator=torch.Generator().manual_seed(0), output_type="np"),
                     repeats)}]
    for label, prior, decoder, super_res in schedules:
        def run(prior=prior, decoder=decoder, super_res=super_res):
            ours(PROMPTS, seed=0, prior_sampler=prior[0], prior_steps=prior[1], sampler=(decoder[0], super_res[0]),
                 steps=(decoder[1], super_res[1]))
        rows.append({"label": f"ours, {label}", "evaluations": evaluations((label, prior, decoder, super_res)),
                     **timed(run, repeats)})

    flops = real_size_flops()
    per_eval = [flops["prior"], flops["decoder"], flops["super_res"]]
    for row in rows:
        row["real_size_tflop_per_image"] = sum(n * f for n, f in zip(row["evaluations"], per_eval)) / 1e12
    base = rows[0]
    print(f"tiny components, {len(PROMPTS)} prompts, {args.threads} thread(s), median of {repeats}; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("\n| schedule | evaluations (prior, decoder, super-res) | wall s | CPU s | wall vs Karlo default | "
          "real-size TFLOP / image | vs Karlo default |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['evaluations']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
              f"{row['wall_s'] / base['wall_s']:.2f} | {row['real_size_tflop_per_image']:.1f} | "
              f"{row['real_size_tflop_per_image'] / base['real_size_tflop_per_image']:.2f} |")
    print(f"\nreal-size GFLOP per evaluation: prior {flops['prior'] / 1e9:.0f}, decoder {flops['decoder'] / 1e9:.0f}, "
          f"super-res {flops['super_res'] / 1e9:.0f}; parameters {flops['params']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "real_size_flops": flops, "torch": torch.__version__,
                               "date": time.strftime("%Y-%m-%d"), "repeats": repeats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

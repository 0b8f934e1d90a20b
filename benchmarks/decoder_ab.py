"""Interleaved A/B timing of decoder (or prior) training-step variants against the default, in one process.

Every variant builds the same model as ``compare.py``'s ``decoder_train`` (or ``prior_train`` with ``--workload
prior_train``: same seed, model and batch) with its own AdamW; the steps then run round-robin (A B C ... C B A ...),
so a change in the machine's load hits all variants alike. Each round gives each variant's CPU-time ratio to the
baseline of the same round; the reported speed-up is the median of those ratios (above 1: the variant is faster).
Process CPU time is used because the machines this runs on are often shared; on a quiet machine the wall ratios are
printed too.  The first two steps (compilation, for ``compile``) are timed apart and reported as warm-up.

A variant is ``baseline`` or features joined by ``+`` (e.g. ``bf16+channels_last+compile``):
  keep_norm       ``Unet(recompute_norm_in_backward=False)``: store the norm/FiLM/SiLU maps, no recompute
  channels_last   ``Unet(channels_last=True)`` (the unet converts its inputs; decoder only)
  adamw_foreach   ``AdamW(foreach=True)``        adamw_fused     ``AdamW(fused=True)``
  bf16            forward under ``torch.autocast("cpu", torch.bfloat16)`` (``bf16_autocast`` is the same)
  compile         ``module.compile()`` of the unet / prior network (torch.compile in place)
Run: ``python benchmarks/decoder_ab.py --variants baseline channels_last --rounds 6 [--threads 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import decoder_kwargs, prior_kwargs, prior_network_kwargs, sizes_for, unet_kwargs  # noqa: E402

FEATURES = ("keep_norm", "channels_last", "adamw_foreach", "adamw_fused", "bf16", "compile")
ALIASES = {"bf16_autocast": "bf16"}
WORKLOADS = ("decoder_train", "prior_train")


def features(variant: str) -> set[str]:
    """The features a variant name asks for; an argparse-friendly error for unknown ones."""
    if variant == "baseline":
        return set()
    names = {ALIASES.get(name, name) for name in variant.split("+")}
    unknown = sorted(names - set(FEATURES))
    if unknown:
        raise argparse.ArgumentTypeError(f"{variant!r}: unknown feature(s) {unknown}; choose 'baseline' or features "
                                         f"joined by '+' from {', '.join(FEATURES)}")
    return names


def build_model(workload: str, wanted: set[str], quick: bool):
    """(model, trained module, loss closure) of ``workload`` with the model-side features of ``wanted``."""
    s = sizes_for(quick)
    torch.manual_seed(0)
    if workload == "prior_train":
        from dalle2_pytorch.prior import DiffusionPrior, DiffusionPriorNetwork

        if wanted & {"channels_last", "keep_norm"}:
            raise argparse.ArgumentTypeError("channels_last and keep_norm are unet options (decoder_train only)")
        model = DiffusionPrior(net=DiffusionPriorNetwork(**prior_network_kwargs(s)), **prior_kwargs(s)).train()
        text = F.normalize(torch.randn(s.prior_batch, s.prior_dim), dim=-1)
        image = F.normalize(torch.randn(s.prior_batch, s.prior_dim), dim=-1)
        return model, model.net, lambda: model(text_embed=text.clone(), image_embed=image.clone())
    from dalle2_pytorch.decoder import Decoder, Unet

    flags = {"channels_last": "channels_last" in wanted}
    if "keep_norm" in wanted:
        flags["recompute_norm_in_backward"] = False
    model = Decoder(unet=Unet(**unet_kwargs(s), **flags), **decoder_kwargs(s)).train()
    images = torch.rand(s.decoder_batch, 3, s.image_size, s.image_size)
    embeds = F.normalize(torch.randn(s.decoder_batch, s.image_embed_dim), dim=-1)
    return model, model.unets[0], lambda: model(images, image_embed=embeds.clone(), unet_number=1)


def build(variant: str, quick: bool, workload: str = "decoder_train"):
    """A zero-argument training step for ``variant`` and the wall seconds its first two steps took (compilation)."""
    wanted = features(variant)
    model, trained, loss_of_batch = build_model(workload, wanted, quick)
    if "compile" in wanted:
        trained.compile()  # in place: the state dict keeps its keys (no "_orig_mod." prefix)
    opt_kwargs = {"foreach": True} if "adamw_foreach" in wanted else {"fused": True} if "adamw_fused" in wanted else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **opt_kwargs)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in wanted):
            loss = loss_of_batch()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    start = time.perf_counter()
    step()  # warm-up (and compilation)
    step()  # a second step: compile may recompile once (e.g. for the optimizer's now-present state)
    setup = time.perf_counter() - start
    return step, setup


def run(variants: list[str], rounds: int, quick: bool, workload: str = "decoder_train") -> dict:
    steps, setup = {}, {}
    for v in variants:
        steps[v], setup[v] = build(v, quick, workload)
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
                  "first_two_steps_wall_s": setup[v],
                  # what the first two steps took beyond two ordinary steps: compilation, for ``compile``
                  "compile_wall_s_est": max(0.0, setup[v] - 2 * statistics.median(wall[v]))}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "channels_last"],
                        help="the first one is the baseline the others are compared with; each is 'baseline' or "
                             f"features joined by '+' from {', '.join(FEATURES)}")
    parser.add_argument("--workload", choices=WORKLOADS, default="decoder_train")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (numbers mean nothing)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--peak-rss", action="store_true",
                        help="instead: run only the first variant for 3 steps and print this process's peak RSS")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    for variant in args.variants:
        try:
            features(variant)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    torch.set_num_threads(args.threads)
    if args.peak_rss:
        import resource
        step, _ = build(args.variants[0], args.quick, args.workload)
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.variants[0]}: peak RSS {peak:.0f} MB")
        return {args.variants[0]: {"peak_rss_mb": peak}}
    load = os.getloadavg()
    out = run(args.variants, args.rounds, args.quick, args.workload)
    end_load = os.getloadavg()
    print(f"{args.workload}, {args.threads} threads, {args.rounds} rounds, load average {load[0]:.1f} -> "
          f"{end_load[0]:.1f}, torch {torch.__version__}")
    print("| variant | CPU s/step | wall s/step | speed-up vs first (CPU, median of ratios) | (wall) | "
          "first two steps, wall s | of which compile (est.) |")
    print("|---|---|---|---|---|---|---|")
    for v, m in out.items():
        print(f"| {v} | {m['cpu_s_median']:.3f} | {m['wall_s_median']:.3f} | {m['speedup_cpu']:.3f}x | "
              f"{m['speedup_wall']:.3f}x | {m['first_two_steps_wall_s']:.1f} | {m['compile_wall_s_est']:.1f} |")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"workload": args.workload, "threads": args.threads, "rounds": args.rounds,
                                             "load": load, "load_at_end": end_load,
                                             "torch": torch.__version__, "variants": out}, indent=1))
    return out


if __name__ == "__main__":
    main()

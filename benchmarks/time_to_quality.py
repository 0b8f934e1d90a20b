"""Time to an image at equal quality: each sampler's NFE sweep against ancestral DDPM over all 1000 training steps.

Issue 22 asks for the time per image at which each sampler reaches the quality of the reference implementation's
default sampler (ancestral DDPM over every training step), on the same weights, at 32 and 64 px.  For each size a
small single-unet toy-shapes decoder is trained once (`sampler_quality.train_or_load`; cached under
``benchmarks/_work/time_to_quality/<size>``, git-ignored) and then, all from the same starting noise:

* the reference: DDPM, 1000 steps (NFE 1000);
* every sampler at increasing NFE (5, 10, 20, 50, 100, 250), until it is **within noise** of the reference at two
  swept NFEs in a row (the sweep of that sampler stops there; the first of the two is its "matched NFE").

"Within noise" (:func:`within_noise`) needs both:

* faithfulness (the toy pixel judge) not below the reference's by more than 2 standard errors of the difference of
  two binomial proportions over N images each: ``f >= f_ref - 2 sqrt(2 p (1 - p) / N)``, p pooled with add-one
  smoothing (so a reference at 100 % still has a non-zero error);
* FID against real toy images not above the reference's by more than the real-vs-real floor: the FID that N *real*
  images (a set drawn with another seed) get against the same real set, i.e. what the estimator reads for a
  perfect sampler at this N.  FIDs are in `RandomConvFeatures`' space (seeded random conv net, no download).

Timing: CPU seconds (``time.process_time``) and wall seconds per image, N images in one batch, at ``--threads``
torch threads (default 1: the CPU time then does not depend on what else runs on a shared machine); the
1-minute load average is recorded with every row.  Run ``python benchmarks/time_to_quality.py [--sizes 32 64]``;
``--quick`` is a seconds-long smoke test (16 px, 50 training steps).  Writes
``<out>/time_to_quality_<tag>.{json,md}`` and one plot per size, after every row (a stopped run keeps its rows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from line_plot import save_line_plot  # noqa: E402
from sampler_quality import (SAMPLER_NAMES, SAMPLERS, Mode, caption_embeddings, generate, steps_for,  # noqa: E402
                             train_or_load)

from dalle2_pytorch.data import ToyShapesDataset  # noqa: E402
from dalle2_pytorch.eval.features import RandomConvFeatures, extract_features  # noqa: E402
from dalle2_pytorch.eval.image_metrics import fid_from_features  # noqa: E402
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness  # noqa: E402

NFES = (5, 10, 20, 50, 100, 250)
NO_CROSS_EMBED = (("init_cross_embed", False), ("init_conv_kernel_size", 3))
SIZES = {
    # 1.1 M parameters; ~4 ms of CPU per image and evaluation at 1 thread
    "32": Mode(image_size=32, unet_dim=16, dim_mults=(1, 2, 4), timesteps=1000, train_steps=400, batch_size=32,
               lr=3e-3, num_train_images=2304, num_real_images=1152, samples_per_caption=2, nfes=NFES,
               reference_steps=1000, unet_extra=NO_CROSS_EMBED),
    # Imagen's memory-efficient layout (downsample first) keeps 64 px at about the 32 px model's cost
    "64": Mode(image_size=64, unet_dim=8, dim_mults=(1, 2, 4, 8), timesteps=1000, train_steps=400, batch_size=32,
               lr=3e-3, num_train_images=2304, num_real_images=1152, samples_per_caption=2, nfes=NFES,
               reference_steps=1000, unet_extra=NO_CROSS_EMBED + (("resnet_groups", 4), ("memory_efficient", True))),
}
QUICK = Mode(image_size=16, unet_dim=8, dim_mults=(1, 2), timesteps=50, train_steps=3, batch_size=8, lr=2e-3,
             num_train_images=72, num_real_images=72, samples_per_caption=1, nfes=(2, 4, 8, 16),
             reference_steps=50)


def faithfulness_tolerance(f_ref: float, f: float, n: int) -> float:
    """Two standard errors of the difference of two proportions over ``n`` images each (add-one pooled p)."""
    pooled = (round(f_ref * n) + round(f * n) + 1) / (2 * n + 2)
    return 2 * math.sqrt(2 * pooled * (1 - pooled) / n)


def within_noise(row: dict, reference: dict, fid_floor: float, n: int) -> bool:
    """Whether ``row``'s quality is that of ``reference`` up to sampling noise (see the module docstring)."""
    faithful = row["faithfulness"] >= reference["faithfulness"] - faithfulness_tolerance(
        reference["faithfulness"], row["faithfulness"], n)
    return faithful and row["fid_vs_real"] <= reference["fid_vs_real"] + fid_floor


def matched_nfe(rows: list[dict]) -> dict | None:
    """The first row of the first two consecutive within-noise rows (rows of one sampler, NFE ascending); else
    the last row if only it is within noise (marked ``single``), else None."""
    for first, second in zip(rows, rows[1:]):
        if first["within_noise"] and second["within_noise"]:
            return first
    return {**rows[-1], "single": True} if rows and rows[-1]["within_noise"] else None


def timed_sample(decoder, conditions: torch.Tensor, sampler: str, steps: int, seed: int) -> dict:
    """Images and per-image CPU/wall seconds of one batched ``decoder.sample`` run, with the load average."""
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    images, calls, wall = generate(decoder, conditions, sampler, steps, seed)
    cpu = time.process_time() - cpu
    n = len(conditions)
    return {"images": images, "sampler": sampler, "steps": steps, "nfe": calls, "cpu_s_per_image": cpu / n,
            "wall_s_per_image": wall / n, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def score(run: dict, captions: list[str], features, real_features: torch.Tensor,
          reference_features: torch.Tensor | None) -> dict:
    images = run.pop("images")
    fake = extract_features(images, features)
    run["fid_vs_real"] = fid_from_features(real_features, fake)
    run["fid_vs_reference"] = 0.0 if reference_features is None else fid_from_features(reference_features, fake)
    run.update(toy_faithfulness(images, captions))
    return run | {"_features": fake}


def measure_size(label: str, mode: Mode, work_dir: Path, seed: int, retrain: bool, save, say=print,
                 images_per_caption: int | None = None) -> dict:
    """Train or reuse the decoder of ``mode``, run the reference and every sampler's sweep; ``save(result)``
    is called after every row.  ``images_per_caption`` overrides the mode's (the cached decoder stays valid)."""
    dataset = ToyShapesDataset(num_samples=mode.num_real_images, image_size=mode.image_size, seed=1)
    all_captions = dataset.all_captions()
    embeds = caption_embeddings(all_captions)
    train_started = time.process_time()
    decoder = train_or_load(mode, work_dir / label / "decoder", embeds, retrain, say)
    marker = json.loads((work_dir / label / "decoder" / "benchmark_stage.json").read_text())
    if images_per_caption is not None:
        mode = replace(mode, samples_per_caption=images_per_caption)
    captions = [c for c in all_captions for _ in range(mode.samples_per_caption)]
    n = len(captions)
    conditions = torch.stack([embeds[c] for c in captions])
    features = RandomConvFeatures(num_features=32, image_size=mode.image_size, seed=0)
    real_features = extract_features(dataset.render_range()[0], features)
    floor_images, floor_captions, _ = ToyShapesDataset(num_samples=n, image_size=mode.image_size,
                                                       seed=2).render_range()
    real_floor = {"fid_vs_real": fid_from_features(real_features, extract_features(floor_images, features)),
                  **toy_faithfulness(floor_images, floor_captions)}
    result = {"size": label, "config": asdict(mode), "num_images": n, "train_seconds": marker.get("seconds"),
              "train_cpu_s_this_run": round(time.process_time() - train_started, 1), "real_floor": real_floor,
              "reference": None, "rows": [], "summary": {}}
    say(f"[{label} px] real-vs-real floor: FID {real_floor['fid_vs_real']:.4f}; reference DDPM "
        f"{mode.reference_steps} steps on {n} images")
    reference = score(timed_sample(decoder, conditions, "ddpm", mode.reference_steps, seed), captions, features,
                      real_features, None)
    reference_features = reference.pop("_features")
    result["reference"] = reference
    save(result)
    for sampler in SAMPLERS:
        rows = []
        for nfe in mode.nfes:
            if sampler == "ddpm" and nfe >= mode.reference_steps:
                break
            row = score(timed_sample(decoder, conditions, sampler, steps_for(sampler, nfe), seed), captions,
                        features, real_features, reference_features)
            row.pop("_features")
            row["within_noise"] = within_noise(row, reference, real_floor["fid_vs_real"], n)
            rows.append(row)
            result["rows"].append(row)
            say(f"[{label} px] {SAMPLER_NAMES[sampler]:>17} NFE {row['nfe']:>3}: FID {row['fid_vs_real']:.4f}, "
                f"faithfulness {row['faithfulness']:.3f}, {1e3 * row['cpu_s_per_image']:.1f} CPU-ms/image"
                f"{' (within noise)' if row['within_noise'] else ''}")
            save(result)
            if len(rows) >= 2 and rows[-1]["within_noise"] and rows[-2]["within_noise"]:
                break
        match = matched_nfe(rows)
        result["summary"][sampler] = None if match is None else {
            "nfe": match["nfe"], "single": match.get("single", False),
            "cpu_s_per_image": match["cpu_s_per_image"], "wall_s_per_image": match["wall_s_per_image"],
            "cpu_ratio": reference["cpu_s_per_image"] / match["cpu_s_per_image"],
            "wall_ratio": reference["wall_s_per_image"] / match["wall_s_per_image"]}
        save(result)
    return result


def markdown(result: dict) -> str:
    """The summary table and the full sweep of every size in ``result``."""
    lines = [f"{result['date']}, torch {result['torch']}, {result['threads']} torch thread(s), "
             f"{result['machine']}."]
    for size in result["sizes"].values():
        ref, floor, n = size["reference"], size["real_floor"], size["num_images"]
        if ref is None:
            continue
        lines += ["", f"**{size['size']} px** ({n} images, toy decoder {size['config']['unet_dim']}-dim "
                  f"{tuple(size['config']['dim_mults'])}; reference DDPM {ref['nfe']} NFE: "
                  f"{ref['cpu_s_per_image']:.3f} CPU-s and {ref['wall_s_per_image']:.3f} wall-s per image, "
                  f"FID {ref['fid_vs_real']:.4f}, faithfulness {ref['faithfulness']:.3f}; real-vs-real FID floor "
                  f"{floor['fid_vs_real']:.4f})", "",
                  f"| sampler | matched NFE | CPU-s / image | wall-s / image | DDPM-{ref['nfe']} / it, CPU "
                  "| ... wall |",
                  "|---|---|---|---|---|---|"]
        for sampler, match in size["summary"].items():
            name = SAMPLER_NAMES[sampler]
            if match is None:
                lines.append(f"| {name} | not within noise at any swept NFE | - | - | - | - |")
                continue
            lines.append(f"| {name} | {match['nfe']}{' (only the last)' if match['single'] else ''} | "
                         f"{match['cpu_s_per_image']:.4f} | {match['wall_s_per_image']:.4f} | "
                         f"**{match['cpu_ratio']:.0f}x** | {match['wall_ratio']:.0f}x |")
        lines += ["", f"| sampler | NFE | FID vs real | FID vs DDPM-{ref['nfe']} | faithfulness | within noise | "
                  "CPU-ms / image | wall-ms / image | load avg |", "|---|---|---|---|---|---|---|---|---|"]
        for row in [dict(ref, sampler="ddpm_reference", within_noise=True)] + size["rows"]:
            name = "**DDPM (reference)**" if row["sampler"] == "ddpm_reference" else SAMPLER_NAMES[row["sampler"]]
            lines.append(f"| {name} | {row['nfe']} | {row['fid_vs_real']:.4f} | {row['fid_vs_reference']:.4f} | "
                         f"{row['faithfulness']:.3f} | {'yes' if row['within_noise'] else 'no'} | "
                         f"{1e3 * row['cpu_s_per_image']:.1f} | {1e3 * row['wall_s_per_image']:.1f} | "
                         f"{row['load_avg_1min'][0]:.1f}-{row['load_avg_1min'][1]:.1f} |")
    return "\n".join(lines)


def plot(size: dict, path: Path) -> Path:
    def series(key: str) -> dict[str, list[tuple[float, float]]]:
        return {SAMPLER_NAMES[s]: [(r["nfe"], r[key]) for r in size["rows"] if r["sampler"] == s] for s in SAMPLERS}

    ref = size["reference"]
    panels = [{"title": "FID vs real, log scale (lower is better)", "x_label": "NFE",
               "series": series("fid_vs_real"), "reference": ref["fid_vs_real"], "log_y": True},
              {"title": "faithfulness (higher is better)", "x_label": "NFE", "series": series("faithfulness"),
               "reference": ref["faithfulness"]}]
    return save_line_plot(path, panels, [SAMPLER_NAMES[s] for s in SAMPLERS],
                          f"toy shapes {size['size']} px, {size['num_images']} images",
                          reference_label=f"DDPM {ref['nfe']} steps")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").is_file() else "unknown"
    return f"{model}, {os.cpu_count()} logical CPUs"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test at 16 px")
    parser.add_argument("--work-dir", type=Path, default=Path(__file__).resolve().parent / "_work" / "time_to_quality",
                        help="where the trained toy decoders are cached")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--tag", default=None, help="output file name part (default: the sizes, or 'quick')")
    parser.add_argument("--retrain", action="store_true", help="train the toy decoders again even if cached")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    parser.add_argument("--images-per-caption", type=int, default=None,
                        help="sampled images per caption (18 captions; default: the size's own, 2)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.images_per_caption is not None and args.images_per_caption < 1:
        parser.error(f"--images-per-caption must be at least 1, got {args.images_per_caption}")
    torch.set_num_threads(args.threads)
    sizes = {"16": QUICK} if args.quick else {label: SIZES[label] for label in args.sizes}
    tag = args.tag or ("quick" if args.quick else "_".join(sizes))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
           "threads": args.threads, "machine": machine(), "quick": args.quick, "sizes": {}}

    def save(size_result: dict) -> None:
        out["sizes"][size_result["size"]] = size_result
        (args.out_dir / f"time_to_quality_{tag}.json").write_text(json.dumps(out, indent=1))
        (args.out_dir / f"time_to_quality_{tag}.md").write_text(markdown(out) + "\n")
        if size_result["rows"]:
            plot(size_result, args.out_dir / f"time_to_quality_{tag}_{size_result['size']}px.png")

    for label, mode in sizes.items():
        measure_size(label, mode, args.work_dir, args.seed, args.retrain, save,
                     images_per_caption=args.images_per_caption)
    print(markdown(out))
    return out


if __name__ == "__main__":
    main()

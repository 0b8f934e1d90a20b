"""Image quality vs number of function evaluations (NFE) for every sampler, on the toy shapes set.

A small single-unet `Decoder` is trained (once; cached under ``benchmarks/_work/sampler_quality/<mode>``) to draw
toy shapes from a per-caption embedding (a fixed random unit vector per caption).  Then every sampler (DDPM, DDIM,
DPM-Solver++(2M), Euler, Heun) generates the same captions from the same starting noise at several NFE, and each
set is scored against a 250-step DDPM run of the same model:

* FID against real toy images and FID against the 250-step DDPM samples, in the feature space of a seeded random
  conv net (`dalle2_pytorch.eval.RandomConvFeatures`; no download, comparable between runs);
* faithfulness: the share of images whose colour and shape the toy pixel judge reads as the caption says.

NFE is counted at the unet's `forward_with_cond_scale` (Heun uses 2 per step but 1 on its last, so it is given (NFE + 1) // 2 steps).
Run: ``python benchmarks/sampler_quality.py [--mode full|reduced|quick]``; writes a Markdown table to stdout and
``<out>/sampler_quality_<mode>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from line_plot import save_line_plot  # noqa: E402

from dalle2_pytorch.data import ToyShapesDataset  # noqa: E402
from dalle2_pytorch.decoder import Decoder, Unet  # noqa: E402
from dalle2_pytorch.eval.features import RandomConvFeatures, extract_features  # noqa: E402
from dalle2_pytorch.eval.image_metrics import fid_from_features  # noqa: E402
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness  # noqa: E402

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "heun")
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)", "euler": "Euler", "heun": "Heun"}
EMBED_DIM = 32


@dataclass(frozen=True)
class Mode:
    image_size: int
    unet_dim: int
    dim_mults: tuple[int, ...]
    timesteps: int
    train_steps: int
    batch_size: int
    lr: float
    num_train_images: int
    num_real_images: int
    samples_per_caption: int
    nfes: tuple[int, ...]
    reference_steps: int
    unet_extra: tuple[tuple[str, object], ...] = ()  # further Unet keyword arguments, as (name, value) pairs


MODES = {
    "full": Mode(image_size=32, unet_dim=32, dim_mults=(1, 2, 4), timesteps=1000, train_steps=1500, batch_size=32,
                 lr=2e-3, num_train_images=4608, num_real_images=2304, samples_per_caption=8,
                 nfes=(5, 10, 20, 50), reference_steps=250),
    "reduced": Mode(image_size=16, unet_dim=24, dim_mults=(1, 2), timesteps=1000, train_steps=800, batch_size=32,
                    lr=3e-3, num_train_images=2304, num_real_images=1152, samples_per_caption=8,
                    nfes=(5, 10, 20, 50), reference_steps=250),
    "quick": Mode(image_size=16, unet_dim=8, dim_mults=(1, 2), timesteps=50, train_steps=3, batch_size=8,
                  lr=2e-3, num_train_images=72, num_real_images=36, samples_per_caption=1,
                  nfes=(2, 4), reference_steps=8),
}


def caption_embeddings(captions: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """One fixed random unit vector per caption: the 'CLIP image embedding' the decoder is conditioned on."""
    vectors = torch.nn.functional.normalize(torch.randn(len(captions), EMBED_DIM,
                                                        generator=torch.Generator().manual_seed(seed)), dim=-1)
    return dict(zip(captions, vectors))


def build_decoder(mode: Mode) -> Decoder:
    unet = Unet(dim=mode.unet_dim, image_embed_dim=EMBED_DIM, cond_dim=mode.unet_dim, dim_mults=mode.dim_mults,
                num_resnet_blocks=1, attn_heads=2, attn_dim_head=16, **dict(mode.unet_extra))
    return Decoder(unet=unet, image_size=mode.image_size, timesteps=mode.timesteps, predict_v=True,
                   learned_variance=False, image_cond_drop_prob=0.1, text_cond_drop_prob=0.0)


def train_or_load(mode: Mode, directory: Path, embeds: dict[str, torch.Tensor], retrain: bool, say) -> Decoder:
    marker = directory / "benchmark_stage.json"
    settings = {k: v for k, v in asdict(mode).items() if k != "unet_extra" or v}  # keeps older caches' fingerprints
    fingerprint = json.dumps(settings | {"embed_dim": EMBED_DIM}, sort_keys=True)
    if not retrain and marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        say(f"reusing the toy decoder in {directory}")
        return Decoder.from_pretrained(directory).eval()
    torch.manual_seed(0)
    images, captions, _ = ToyShapesDataset(num_samples=mode.num_train_images, image_size=mode.image_size,
                                           seed=0).render_range()
    conditions = torch.stack([embeds[c] for c in captions])
    decoder = build_decoder(mode).train()
    optimizer = torch.optim.AdamW(decoder.unets[0].parameters(), lr=mode.lr, weight_decay=0.0)
    warmup = max(1, mode.train_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / mode.train_steps)))))
    generator = torch.Generator().manual_seed(0)
    started, running = time.perf_counter(), None
    for step in range(mode.train_steps):
        index = torch.randint(len(images), (mode.batch_size,), generator=generator)
        loss = decoder(images[index], image_embed=conditions[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.unets[0].parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == mode.train_steps:
            say(f"train step {step + 1}/{mode.train_steps}: loss {running:.4f} ({time.perf_counter() - started:.0f} s)")
    decoder.eval()
    decoder.save_pretrained(directory)
    marker.write_text(json.dumps({"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1)}))
    return decoder


def steps_for(sampler: str, nfe: int) -> int:
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


@torch.no_grad()
def generate(decoder: Decoder, conditions: torch.Tensor, sampler: str, steps: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """Images, the number of unet calls made, and the seconds it took (same starting noise for every run)."""
    unet, calls = decoder.unets[0], [0]
    original = unet.forward_with_cond_scale  # what the sampler calls once per evaluation (cond_scale=1)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    unet.forward_with_cond_scale = counted
    try:
        started = time.perf_counter()
        images = decoder.sample(image_embed=conditions, sampler=sampler, steps=steps,
                                generator=torch.Generator().manual_seed(seed))
        return images, calls[0], time.perf_counter() - started
    finally:
        del unet.forward_with_cond_scale


def run(mode_name: str, work_dir: Path, out_dir: Path, retrain: bool, seed: int, say=print) -> dict:
    mode = MODES[mode_name]
    dataset = ToyShapesDataset(num_samples=mode.num_real_images, image_size=mode.image_size, seed=1)
    all_captions = dataset.all_captions()
    embeds = caption_embeddings(all_captions)
    decoder = train_or_load(mode, work_dir / mode_name / "decoder", embeds, retrain, say)
    real_images, _, _ = dataset.render_range()
    captions = [c for c in all_captions for _ in range(mode.samples_per_caption)]
    conditions = torch.stack([embeds[c] for c in captions])
    features = RandomConvFeatures(num_features=32, image_size=mode.image_size, seed=0)
    real_features = extract_features(real_images, features)

    say(f"reference: DDPM, {mode.reference_steps} steps, {len(captions)} images")
    ref_images, ref_nfe, ref_seconds = generate(decoder, conditions, "ddpm", mode.reference_steps, seed)
    ref_features = extract_features(ref_images, features)
    reference = {"sampler": "ddpm", "steps": mode.reference_steps, "nfe": ref_nfe, "seconds": round(ref_seconds, 2),
                 "fid_vs_real": fid_from_features(real_features, ref_features), "fid_vs_reference": 0.0,
                 **toy_faithfulness(ref_images, captions)}
    real_row = {"fid_vs_real": fid_from_features(real_features[: len(captions)], real_features[len(captions):])
                if len(real_features) >= 2 * len(captions) else float("nan"), **toy_faithfulness(
                    real_images[: len(captions)], dataset.render_range(0, len(captions))[1])}
    rows = []
    for sampler in SAMPLERS:
        for nfe in mode.nfes:
            steps = steps_for(sampler, nfe)
            images, calls, seconds = generate(decoder, conditions, sampler, steps, seed)
            fake = extract_features(images, features)
            row = {"sampler": sampler, "steps": steps, "nfe": calls, "seconds": round(seconds, 2),
                   "fid_vs_real": fid_from_features(real_features, fake),
                   "fid_vs_reference": fid_from_features(ref_features, fake), **toy_faithfulness(images, captions)}
            say(f"{SAMPLER_NAMES[sampler]:>17} NFE {calls:>3}: FID {row['fid_vs_real']:.4f}, "
                f"faithfulness {row['faithfulness']:.3f} ({seconds:.1f} s)")
            rows.append(row)
    result = {"mode": mode_name, "config": asdict(mode), "num_images": len(captions), "reference": reference,
              "real_vs_real": real_row, "rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"sampler_quality_{mode_name}.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(result)
    (out_dir / f"sampler_quality_{mode_name}.md").write_text(table + "\n")
    plot(result, out_dir / f"sampler_quality_{mode_name}.png")
    say(table)
    return result


def markdown_table(result: dict) -> str:
    ref = result["reference"]
    lines = [f"Toy shapes, {result['config']['image_size']} px, {result['num_images']} images per row "
             f"({result['mode']} mode); FID in a random-conv feature space (lower is better).", "",
             "| sampler | NFE | FID vs real | FID vs DDPM reference | faithfulness | colour acc. | shape acc. | s |",
             "|---|---|---|---|---|---|---|---|"]

    def line(name: str, row: dict) -> str:
        return (f"| {name} | {row['nfe']} | {row['fid_vs_real']:.4f} | {row['fid_vs_reference']:.4f} | "
                f"{row['faithfulness']:.3f} | {row['colour_accuracy']:.3f} | {row['shape_accuracy']:.3f} | "
                f"{row['seconds']:.1f} |")

    lines.append(line(f"**DDPM {ref['steps']} steps (reference)**", ref))
    for row in result["rows"]:
        lines.append(line(SAMPLER_NAMES[row["sampler"]], row))
    real = result["real_vs_real"]
    lines.append(f"| real images (held-out set vs another real set) | - | {real['fid_vs_real']:.4f} | - | "
                 f"{real['faithfulness']:.3f} | {real['colour_accuracy']:.3f} | {real['shape_accuracy']:.3f} | - |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    rows, ref = result["rows"], result["reference"]
    names = [SAMPLER_NAMES[s] for s in SAMPLERS]

    def series(key: str) -> dict[str, list[tuple[float, float]]]:
        return {SAMPLER_NAMES[s]: [(r["nfe"], r[key]) for r in rows if r["sampler"] == s] for s in SAMPLERS}

    panels = [{"title": "FID vs real, log scale (lower is better)", "x_label": "NFE",
               "series": series("fid_vs_real"), "reference": ref["fid_vs_real"], "log_y": True},
              {"title": "faithfulness (higher is better)", "x_label": "NFE", "series": series("faithfulness"),
               "reference": ref["faithfulness"]}]
    note = f"toy shapes {result['config']['image_size']} px, {result['num_images']} images, {result['mode']} mode"
    return save_line_plot(path, panels, names, note, reference_label=f"DDPM {ref['steps']} steps")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full",
                        help="full: 32 px (long on CPU); reduced: 16 px, fewer images; quick: a seconds-long smoke test")
    parser.add_argument("--quick", action="store_true", help="same as --mode quick")
    parser.add_argument("--work-dir", type=Path, default=Path(__file__).resolve().parent / "_work" / "sampler_quality",
                        help="where the trained toy decoder is cached")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--retrain", action="store_true", help="train the toy decoder again even if cached")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return run("quick" if args.quick else args.mode, args.work_dir, args.out_dir, args.retrain, args.seed)


if __name__ == "__main__":
    main()

"""`dalle2 train pipeline`: a captioned image folder -> CLIP -> embeddings -> prior -> decoder -> one pipeline folder.

``out`` becomes a folder that ``DALLE2.from_pretrained`` (and so `dalle2 sample`, `serve` and `eval`) reads::

    pipeline.json, prior/, decoder/     the DALLE2.save_pretrained layout, with the sampling defaults
    clip/                               the trained CLIP (or a copy of the one given with --clip)
    embeddings/                         the folder's CLIP image and text embeddings (clip-retrieval layout)
    configs/{clip,prior,decoder}.json   the training config of each stage (rerun or tune them by hand)
    training/<stage>/                   each stage's run folder (logs, latest checkpoint for --resume)
    grid.png, results.json              samples for a few of the folder's captions, and a summary

Every stage is reused when a rerun finds it done with the same settings and data (see :mod:`.stages`);
``resume=True`` continues a stage that was interrupted from its last checkpoint.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data import parse_caption
from dalle2_pytorch.data.image_folder import scan_captioned_folder
from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.images import save_captioned_grid
from dalle2_pytorch.pipeline_files import SamplingDefaults
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.runs import pipeline_presets as presets
from dalle2_pytorch.runs.embed_folder import embed_folder, folder_fingerprint
from dalle2_pytorch.runs.stages import (MARKER, Threads, fingerprint, load_or_train, model_part, sampling_settings,
                                        save_pipeline, train_stage)
from dalle2_pytorch.serialization import load_json, save_json

GRID_CAPTIONS = 8
IMAGES_PER_CAPTION = 4


def toy_judgeable(captions: list[str]) -> bool:
    """Whether the pixel judge can read every caption (the built-in toy shapes): then faithfulness is measured."""
    return all({"colour", "shape"} <= set(parse_caption(c)) for c in captions)


def choose_image_size(sizes: list[int]) -> int:
    """64 when most images are at least 64 px on their shorter side, else 32."""
    large = sum(size >= 64 for size in sizes)
    return 64 if large * 2 > len(sizes) else 32


def train_pipeline(images: str | Path, out: str | Path, *, image_size: Optional[int] = None, preset: str = "small",
                   clip: Optional[str | Path] = None, resume: bool = False, threads: int = 1,
                   show_progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse) every stage on the captioned folder ``images`` and write the pipeline to ``out``.

    ``image_size`` 32 or 64 (None: from the images); ``preset`` ``tiny`` or ``small``; ``clip``: a saved CLIP folder
    to use instead of training one; ``threads``: torch CPU threads.  Returns the summary also written to
    ``results.json`` (stage seconds, CPU seconds, the number of unreadable images skipped, the grid path and, on
    toy-shape captions, the faithfulness of the grid's images)."""
    folder = Path(images)
    if not folder.is_dir():
        raise ValueError(f"--images {str(images)!r} is not a folder")
    if clip is not None and not (Path(clip) / "config.json").is_file():
        raise ValueError(f"--clip {str(clip)!r}: no saved CLIP there (config.json missing)")
    if image_size is not None:
        presets.check_preset(preset, image_size)
    with Threads(threads):
        return _train_pipeline(folder, Path(out), image_size, preset, clip, resume, show_progress, say)


def _train_pipeline(folder: Path, out: Path, image_size: Optional[int], preset: str, clip: Optional[str | Path],
                    resume: bool, show_progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    scan = scan_captioned_folder(folder)
    image_size = image_size or choose_image_size(scan.sizes)
    presets.check_preset(preset, image_size)
    say(f"{folder}: {len(scan.files)} images, {len(scan.distinct_captions)} distinct captions"
        + (f", {len(scan.unreadable)} unreadable files skipped (e.g. {scan.unreadable[:2]})" if scan.unreadable else ""))
    estimate = presets.estimate_seconds(preset, image_size, clip is None)
    say(f"preset {preset!r} at {image_size} px: training takes about "
        f"{f'{estimate / 60:.0f} min' if estimate >= 90 else f'{estimate:.0f} s'} on 2 quiet cores "
        "(a progress bar per stage)")
    stages = {"clip": presets.clip_config(preset, image_size, str(folder), scan.captions),
              "prior": presets.prior_config(preset, image_size, str(out / "embeddings"), len(scan.files)),
              "decoder": presets.decoder_config(preset, image_size, str(folder), len(scan.files))}
    for name, data in stages.items():
        save_json(data, out / "configs" / f"{name}.json")
    data_print = fingerprint(folder_fingerprint(folder))
    resume_of = (lambda stage_print: stage_print) if resume else (lambda stage_print: None)

    if clip is None:
        clip_print = fingerprint(model_part(stages["clip"]), data_print)
        load_or_train("clip", out / "clip", clip_print, CLIP,
                      lambda: train_stage("clip", stages["clip"], out, show_progress=show_progress,
                                          save_every=_save_every(stages["clip"]), resume_print=resume_of(clip_print)),
                      say)
    else:
        clip_print = fingerprint("given", folder_fingerprint(Path(clip)))
        if not (out / "clip" / MARKER).is_file() or load_json(out / "clip" / MARKER).get("fingerprint") != clip_print:
            shutil.rmtree(out / "clip", ignore_errors=True)
            CLIP.from_pretrained(clip).save_pretrained(out / "clip")
            save_json({"fingerprint": clip_print, "seconds": 0.0}, out / "clip" / MARKER)
        say(f"using the CLIP in {clip}")
    clip_dir = out / "clip"

    embed_print = fingerprint(clip_print, data_print)
    embed_marker = out / "embeddings" / MARKER
    if embed_marker.is_file() and load_json(embed_marker).get("fingerprint") == embed_print:
        say(f"reusing the embeddings in {out / 'embeddings'}")
    else:
        started = time.perf_counter()
        shutil.rmtree(out / "embeddings", ignore_errors=True)
        embed_folder(folder, clip_dir=clip_dir, out=out / "embeddings", show_progress=show_progress)
        save_json({"fingerprint": embed_print, "seconds": round(time.perf_counter() - started, 1)}, embed_marker)

    models = {}
    for stage, cls in (("prior", DiffusionPrior), ("decoder", Decoder)):
        config = stages[stage]
        stage_print = fingerprint(clip_print, data_print, model_part(config))
        models[stage] = load_or_train(
            stage, out / stage, stage_print, cls,
            lambda stage=stage, config=config, stage_print=stage_print: train_stage(
                stage, config, out, clip_dir=clip_dir, show_progress=show_progress, save_every=_save_every(config),
                resume_print=resume_of(stage_print)), say)

    sampling = SamplingDefaults.from_dict(sampling_settings(stages), source="the pipeline's stage configs")
    pipeline = DALLE2(prior=models["prior"], decoder=models["decoder"], sampling=sampling)
    save_pipeline(pipeline, out)
    summary = _grid(pipeline, scan.distinct_captions, out)
    summary.update({"images": str(folder), "num_images": len(scan.files), "num_unreadable": len(scan.unreadable),
                    "num_captions": len(scan.distinct_captions), "preset": preset, "image_size": image_size,
                    "pipeline": str(out), "seconds": round(time.perf_counter() - wall, 1),
                    "cpu_seconds": round(time.process_time() - cpu, 1), "stage_seconds": _stage_seconds(out)})
    save_json(summary, out / "results.json")
    say(f"wrote the pipeline to {out} and samples to {summary['grid']} in {summary['seconds']:.0f} s "
        f"({summary['cpu_seconds']:.0f} CPU s)"
        + (f"; toy faithfulness of the samples {summary['faithfulness']:.1%}" if "faithfulness" in summary else ""))
    return summary


def _save_every(config: dict[str, Any]) -> int:
    """About ten checkpoints over a stage's run, for --resume."""
    steps = config["trainer"].get("max_steps") or sum(config["trainer"].get("unet_steps") or [1000])
    return max(1, steps // 10)


def _stage_seconds(out: Path) -> dict[str, float]:
    found = {}
    for stage in ("clip", "embeddings", "prior", "decoder"):
        marker = out / stage / MARKER
        if marker.is_file():
            found[stage] = load_json(marker).get("seconds")
    return found


@torch.no_grad()
def _grid(pipeline: DALLE2, distinct: list[str], out: Path) -> dict[str, Any]:
    """Images for up to GRID_CAPTIONS of the folder's captions (all of them when the toy judge can read them)."""
    judged = toy_judgeable(distinct)
    chosen = distinct if judged else distinct[:GRID_CAPTIONS]
    captions = [c for c in chosen for _ in range(IMAGES_PER_CAPTION)]
    images = pipeline(captions, generator=torch.Generator().manual_seed(0))
    grid = save_captioned_grid(images[: GRID_CAPTIONS * IMAGES_PER_CAPTION],
                               captions[: GRID_CAPTIONS * IMAGES_PER_CAPTION], out / "grid.png",
                               columns=2 * IMAGES_PER_CAPTION)
    summary: dict[str, Any] = {"grid": str(grid)}
    if judged:
        from dalle2_pytorch.data import faithfulness

        summary["faithfulness"] = faithfulness(images, captions, attributes=("colour", "shape"))
    return summary

"""What each `dalle2` subcommand does (argument parsing is in :mod:`dalle2_pytorch.cli.main`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def demo(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.demo import run_demo

    summary = run_demo(args.config or args.preset, args.out, retrain=args.retrain, threads=args.threads)
    return 0 if summary["num_images"] else 1


def train(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.configs import load_train_config
    from dalle2_pytorch.runs.loop import TrainingRun

    if args.images is not None:
        if args.kind != "decoder":
            raise ValueError(f"--images trains an unconditional decoder; it does not apply to `train {args.kind}`")
        if args.config is not None:
            raise ValueError("give --config or --images, not both")
        config = images_config(args.images, args.image_size, args.steps, args.out)
    elif args.config is None:
        raise ValueError(f"`dalle2 train {args.kind}` needs --config FILE"
                         + (" (or --images DIR)" if args.kind == "decoder" else ""))
    else:
        config = load_train_config(args.config, kind=args.kind)
    if getattr(args, "threads", None) is not None:  # --threads wins over the config's trainer.threads
        config.trainer.threads = args.threads
    if getattr(args, "compile", None) is not None:  # --compile [MODE] wins over the config's trainer.compile
        from dalle2_pytorch.trainers.compile import check_compile_mode

        config.trainer.compile = check_compile_mode("--compile", args.compile)
    from dalle2_pytorch.runs.preflight import preflight

    # every check `dalle2 config validate` makes, before anything is allocated or trained
    preflight(config).raise_if_any(args.config or args.images, pending_are_errors=True)
    training = TrainingRun(config, resume=args.resume)
    summary = training.run()
    if training.accelerator.is_main_process:
        print(json.dumps(summary))
    return summary.get("exit_code", 0)   # stopped by SIGTERM/SIGUSR1 after saving: 128 + the signal's number


def images_config(folder: str, image_size: int, steps: int | None, out: str | None):
    """An unconditional two-unet cascade (image_size/2 -> image_size) on a folder of images, no config needed."""
    from dalle2_pytorch.runs.configs import DecoderTrainConfig

    if not Path(folder).is_dir():
        raise ValueError(f"--images {folder!r} is not a folder")
    if image_size < 16 or image_size % 16:
        raise ValueError(f"--image-size {image_size}: expected a multiple of 16, at least 16")
    return DecoderTrainConfig.model_validate({
        "kind": "decoder",
        "model": {"unconditional": True, "image_sizes": [image_size // 2, image_size], "timesteps": 1000,
                  "learned_variance": False, "predict_v": True, "sample_timesteps": 50,
                  "unet": [{"dim": 32, "dim_mults": [1, 2, 4], "num_resnet_blocks": 1, "attn_heads": 4},
                           {"dim": 32, "dim_mults": [1, 2, 4], "num_resnet_blocks": 1, "attn_heads": 4}]},
        "data": {"source": "image_folder", "path": folder, "image_size": image_size, "random_flip": True,
                 "batch_size": 16},
        "trainer": {"lr": 3e-4, "epochs": 3 if steps is None else 10 ** 9, "max_steps": steps, "ema_beta": 0.995},
        "evaluation": {"validate_every": 500, "sample_every": 1000, "sampler": "ddim", "sample_steps": 50},
        "checkpointing": {"directory": out or f"checkpoints/{Path(folder).resolve().name}", "save_every": 500},
    })


def sample(args: argparse.Namespace) -> int:
    """Images for the captions, with the pipeline's saved sampling defaults where a flag is left out."""
    import torch

    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.images import caption_slug, save_captioned_grid, save_image

    if args.num_images < 1:
        raise ValueError(f"--num-images {args.num_images}: expected at least 1")
    from dalle2_pytorch.validation import check_seed

    check_seed("--seed", args.seed)
    pipeline = DALLE2.from_pretrained(args.checkpoint)
    cond_scale = None if args.cond_scale is None else \
        pipeline.sampling_defaults.with_first_unet_guidance(args.cond_scale, pipeline.decoder.num_unets)
    captions = [text for text in args.text for _ in range(args.num_images)]
    images = pipeline(captions, cond_scale=cond_scale, sampler=args.sampler, steps=args.steps,
                      prior_sampler=args.prior_sampler, prior_steps=args.prior_steps,
                      prior_cond_scale=args.prior_cond_scale, generator=torch.Generator().manual_seed(args.seed))
    out = Path(args.out)
    for i, (image, caption) in enumerate(zip(images, captions)):
        save_image(image, out / f"{i:03d}_{caption_slug(caption)}.png")
    grid = save_captioned_grid(images, captions, out / "grid.png", columns=args.num_images)
    print(f"wrote {len(images)} images and {grid} to {out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from dalle2_pytorch.eval import run_evaluation
    from dalle2_pytorch.serialization import save_json

    metrics = run_evaluation(args.checkpoint, images_per_caption=args.images_per_caption,
                             num_real_images=args.num_real_images, features=args.features, seed=args.seed,
                             say=print)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    if args.out:
        save_json(metrics, args.out)
    return 0


def serve(args: argparse.Namespace) -> int:
    from dalle2_pytorch.serve import serve_main

    serve_main(args.checkpoint, host=args.host, port=args.port, max_batch=args.max_batch,
               batch_window=args.batch_window, max_queue=args.max_queue, device=args.device,
               extra_allowed_hosts=args.allowed_host)
    return 0


def embed(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.embed_shards import embed_shards

    written = embed_shards(args.urls, clip_dir=args.clip, out=args.out, shard_width=args.shard_width,
                           batch_size=args.batch_size)
    print(f"wrote {len(written)} embedding files to {args.out}")
    return 0


def config_validate(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.config_base import read_config_file
    from dalle2_pytorch.runs.configs import load_train_config

    if read_config_file(args.file).get("kind") == "demo":
        from dalle2_pytorch.runs.demo import load_demo

        load_demo(args.file)
        print(f"{args.file}: valid demo config (and its stage configs)")
        return 0
    from dalle2_pytorch.runs.preflight import preflight

    config = load_train_config(args.file)
    findings = preflight(config)
    findings.raise_if_any(args.file, pending_are_errors=False)
    print(f"{args.file}: valid {config.kind} config (models built empty, sizes, steps, sampler, metric and data "
          "paths checked)")
    for note in findings.pending:
        print(f"  note: {note}")
    return 0


def config_example(args: argparse.Namespace) -> int:
    """List the example configs, or copy one (a demo: with its stage configs) into ``--out``."""
    from dalle2_pytorch.runs.config_base import read_config_file
    from dalle2_pytorch.runs.demo import CONFIG_DIR, STAGES

    examples = {path.stem: path for path in sorted(CONFIG_DIR.glob("*.json"))}
    if args.name is None:
        for name, path in examples.items():
            print(f"{name:24s} {read_config_file(path).get('kind')}")
        return 0
    name = args.name.removesuffix(".json")
    if name not in examples:
        raise ValueError(f"no example config {args.name!r}; choose one of {', '.join(examples)}")
    source = examples[name]
    data = read_config_file(source)
    files = [source] + ([CONFIG_DIR / data[stage] for stage in STAGES] if data.get("kind") == "demo" else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = out / path.name
        if target.exists():
            raise FileExistsError(f"{target} exists; remove it or choose another --out")
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {target}")
    return 0


def config_show(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.configs import config_class, describe_fields

    print(f"# dalle2 train {args.kind} --config FILE  (JSON/TOML/YAML with these sections)")
    print("\n".join(describe_fields(config_class(args.kind))))
    return 0

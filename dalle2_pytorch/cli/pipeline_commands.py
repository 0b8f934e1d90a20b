"""Own-data commands of `dalle2`, added to the parsers that :mod:`dalle2_pytorch.cli.main` builds (one call there):

* ``dalle2 train pipeline --images DIR [--image-size 32|64] [--preset tiny|small] [--out DIR] [--resume]``
* ``dalle2 embed --images DIR --clip C --out O`` (image and text embeddings, clip-retrieval layout)
* ``dalle2 eval --checkpoint P --images DIR`` (scores on any captioned folder)
* ``--threads N`` on every command (torch CPU threads; default 1, see docs/own-data.md for the measurement)
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

DEFAULT_THREADS = 1


def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(action for action in parser._actions if action.dest == dest)


def _leaf_parsers(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    """Every parser under ``sub`` that runs a command (``config validate``, not ``config``)."""
    found = []
    for child in dict.fromkeys(sub.choices.values()):
        nested = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
        found.extend(p for inner in nested for p in _leaf_parsers(inner)) if nested else found.append(child)
    return found


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's CPU thread count from ``--threads`` (default 1); a training config's ``trainer.threads`` is used
    by ``dalle2 train`` when the flag is left out.  Returns the count set."""
    import torch

    threads = getattr(args, "threads", None)
    if threads is None:
        threads = DEFAULT_THREADS
    if threads < 1:
        raise ValueError(f"--threads {threads}: expected at least 1")
    torch.set_num_threads(threads)
    return threads


def _with_threads(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def threaded(args: argparse.Namespace) -> int:
        apply_threads(args)
        return run(args)

    threaded.__wrapped__ = run
    return threaded


def register(sub: argparse._SubParsersAction) -> None:
    """Add the own-data options and subcommands to the parsers in ``sub`` (the `dalle2` subcommands)."""
    train, embed = sub.choices["train"], sub.choices["embed"]

    _action(train, "kind").choices.append("pipeline")
    train.add_argument("--preset", choices=["tiny", "small"], default="small",
                       help="pipeline: tiny (seconds, a smoke test) or small (default; minutes on 2 cores)")
    train.add_argument("--clip", default=None, help="pipeline: a saved CLIP folder to use instead of training one")
    _action(train, "images").help = ("pipeline: the captioned image folder; decoder without a config: train an "
                                      "unconditional cascade on this folder")
    _action(train, "image_size").default = None   # pipeline: from the images; --images decoder: 64
    _action(train, "image_size").help = "with --images: final image size (pipeline 32 or 64, default from the " \
                                        "images; decoder default 64)"
    _action(train, "out").help = ("with --images: checkpoint folder (decoder default checkpoints/<folder>; pipeline "
                                  "default outputs/pipeline)")
    train.set_defaults(run=train_command(train.get_default("run")))

    _action(embed, "urls").nargs = "?"
    embed.add_argument("--images", default=None, help="a captioned image folder instead of shards: writes img_emb/, "
                       "text_emb/ and metadata/ (clip-retrieval layout)")
    embed.set_defaults(run=embed_command(embed.get_default("run")))

    add_folder_eval_arguments(sub.choices["eval"])

    for parser in _leaf_parsers(sub):
        if "threads" not in {action.dest for action in parser._actions}:
            parser.add_argument("--threads", type=int, default=None,
                                help=f"torch CPU threads (default {DEFAULT_THREADS}: the fastest per CPU second for "
                                     "these small models on 2 cores)")
        parser.set_defaults(run=_with_threads(parser.get_default("run")))


def train_command(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.kind != "pipeline":
            if args.image_size is None:
                args.image_size = 64
            if args.clip is not None:
                raise ValueError(f"--clip is for `train pipeline`; `train {args.kind}` names its CLIP in --config")
            return original(args)
        return train_pipeline(args)

    return run


def train_pipeline(args: argparse.Namespace) -> int:
    from dalle2_pytorch.runs.pipeline import train_pipeline as run_pipeline

    if args.images is None:
        raise ValueError("`dalle2 train pipeline` needs --images DIR (a folder of images with captions)")
    if args.config is not None or args.steps is not None:
        raise ValueError("`dalle2 train pipeline` takes --preset, not --config/--steps (it writes its stage configs "
                         "to <out>/configs/ for `dalle2 train <kind> --config`)")
    summary = run_pipeline(args.images, args.out or "outputs/pipeline", image_size=args.image_size,
                           preset=args.preset, clip=args.clip, resume=args.resume,
                           threads=getattr(args, "threads", None) or DEFAULT_THREADS)
    print(json.dumps({k: v for k, v in summary.items() if k != "stage_seconds"}))
    return 0


def embed_command(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.images is None:
            if args.urls is None:
                raise ValueError("`dalle2 embed` needs shards (e.g. data/{0000..0009}.tar) or --images DIR")
            return original(args)
        if args.urls is not None:
            raise ValueError("give shards or --images, not both")
        from dalle2_pytorch.runs.embed_folder import embed_folder

        info = embed_folder(args.images, clip_dir=args.clip, out=args.out, batch_size=args.batch_size)
        print(f"wrote {info['num_embedded']} image and text embeddings to {args.out} "
              f"({len(info['unreadable'])} unreadable images skipped)")
        return 0

    return run


def add_folder_eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    """``dalle2 eval --images DIR``: score on a captioned folder instead of the toy set, with the sampling knobs."""
    evaluate.add_argument("--images", default=None, help="a captioned image folder: score on its captions and images "
                          "(CLIP score, FID/KID, diversity) instead of the toy set")
    evaluate.add_argument("--max-captions", type=int, default=32, help="with --images: captions drawn (default 32)")
    evaluate.add_argument("--cond-scale", type=float, default=None, help="with --images: decoder guidance on unet 1 "
                          "(default: the pipeline's)")
    evaluate.add_argument("--prior-num-samples", type=int, default=None, help="with --images: the prior's rerank "
                          "count (default: the pipeline's)")
    evaluate.add_argument("--eta", type=float, default=None, help="with --images: DDIM noise in [0, 1] (with "
                          "--sampler ddim)")
    evaluate.add_argument("--sampler", default=None, help="with --images: decoder sampler (default: the pipeline's)")
    evaluate.add_argument("--steps", type=int, default=None, help="with --images: decoder steps (default: the "
                          "pipeline's)")
    features = _action(evaluate, "features")
    features.choices.append("inception")
    features.default = None
    features.help = ("FID/KID features: random (a seeded random conv net; toy default), clip (the pipeline's CLIP; "
                     "--images default) or inception (needs torch-fidelity)")
    evaluate.set_defaults(run=eval_command(evaluate.get_default("run")))


def eval_command(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        knobs = [name for name in ("cond_scale", "prior_num_samples", "eta", "sampler", "steps")
                 if getattr(args, name) is not None]
        if args.images is None:
            if knobs:
                raise ValueError(f"--{knobs[0].replace('_', '-')} applies with --images DIR")
            if args.features == "inception":
                raise ValueError("--features inception applies with --images DIR")
            args.features = args.features or "random"
            return original(args)
        from dalle2_pytorch.eval.folder import evaluate_folder
        from dalle2_pytorch.serialization import save_json

        metrics = evaluate_folder(args.checkpoint, args.images, images_per_caption=args.images_per_caption,
                                  max_captions=args.max_captions, max_real_images=args.num_real_images,
                                  features=args.features or "clip", seed=args.seed, cond_scale=args.cond_scale,
                                  prior_num_samples=args.prior_num_samples, eta=args.eta, sampler=args.sampler,
                                  steps=args.steps, say=print)
        print(json.dumps(metrics, indent=2, sort_keys=True))
        if args.out:
            save_json(metrics, args.out)
        return 0

    return run

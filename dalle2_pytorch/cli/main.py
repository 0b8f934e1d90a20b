"""The `dalle2` command (and its `dream` alias): a thin argparse front end over train/, data/ and the models.

Errors a user can cause print one line (``error: ...``) and exit with status 2; ``--debug`` shows the traceback.
Those are :class:`dalle2_pytorch.errors.UserError` (raised where the library reads or writes files and data) and the
``ValueError``/``TypeError``/``OSError``/``ImportError`` of the entry-point checks.  Anything else is a bug of ours:
its traceback is shown with a line saying so, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from functools import partial
from typing import Sequence

from dalle2_pytorch.cli import commands, pipeline_commands
from dalle2_pytorch.cli.manipulate_commands import add_manipulation_commands
from dalle2_pytorch.errors import DISTRIBUTION, UserError
from dalle2_pytorch.hub import allow_downloads

# what the entry-point checks raise on bad input (UserError covers what the library raises on bad files and data)
USER_ERRORS = (UserError, ValueError, TypeError, ImportError, OSError, FloatingPointError)

PIPELINE_HELP = ("a pipeline folder: DALLE2.save_pretrained output (pipeline.json, prior/, decoder/) or an older "
                 "`dalle2 demo` / DALLE2 folder, or a Hugging Face Hub id of one (org/repo[@revision][/subfolder], "
                 "fetched into the HF cache; HF_HUB_OFFLINE=1 uses the cache only); its saved sampling defaults apply "
                 "(default: outputs/checkpoints)")
ALLOW_DOWNLOAD_HELP = ("let the checkpoint's own config.json fetch what it names (e.g. an HFClipAdapter's CLIP "
                       "config); without it loading downloads nothing but the --checkpoint id you typed")


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` (a folder or Hub id) and ``--allow-download``."""
    # "./": the default is a local folder, never looked up on the Hub when it is missing
    parser.add_argument("--checkpoint", default="./outputs/checkpoints", help=PIPELINE_HELP)
    parser.add_argument("--allow-download", action="store_true", help=ALLOW_DOWNLOAD_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalle2", description="DALL-E 2 (unCLIP) in PyTorch: train, sample, demo.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # --debug is accepted after the command too (SUPPRESS: absent there, it keeps the top-level value)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback on errors")
    command = partial(sub.add_parser, parents=[debug])

    demo = command("demo", help="train CLIP, prior and a two-unet decoder on the toy set, then generate")
    demo.add_argument("--preset", choices=["tiny", "small"], default="small",
                      help="tiny: seconds, a smoke test; small (default): minutes, faithful images "
                           "(configs/toy_tiny_demo.json, configs/toy_demo.json)")
    demo.add_argument("--config", default=None, help="a demo config file instead of a preset (it names one "
                      "training config per stage, e.g. configs/toy_demo.json)")
    demo.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    demo.add_argument("--retrain", action="store_true", help="retrain every stage even if a checkpoint exists")
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for these "
                      "small models, and robust on a busy machine)")
    demo.set_defaults(run=commands.demo)

    train = command("train", help="train a model from a config file (or a decoder on a folder of images)")
    train.add_argument("kind", choices=["clip", "prior", "decoder", "vae"])
    train.add_argument("--config", help="training config (.json, .toml or .yaml)")
    train.add_argument("--resume", action="store_true", help="continue from <checkpointing.directory>/latest")
    train.add_argument("--images", help="decoder only, no config: train an unconditional cascade on this folder")
    train.add_argument("--image-size", type=int, default=64, help="with --images: final image size (default 64)")
    train.add_argument("--steps", type=int, default=None, help="with --images: training steps (default: 3 epochs)")
    train.add_argument("--out", default=None, help="with --images: checkpoint folder (default checkpoints/<folder>)")
    train.add_argument("--compile", nargs="?", const=True, default=None, metavar="MODE",
                       help="torch.compile the trained modules (unets, prior network, CLIP) in place; MODE: a "
                            "torch.compile mode, e.g. max-autotune-no-cudagraphs (sets the config's trainer.compile; "
                            "the first steps compile, minutes on a CPU)")
    train.set_defaults(run=commands.train)

    for name in ("sample", "dream"):
        sample = command(name, help="generate images from text with a trained prior and decoder")
        add_sample_arguments(sample)

    evaluate = command("eval", help="score a trained toy pipeline: faithfulness, FID/KID, CLIP score, prior metrics")
    add_checkpoint_arguments(evaluate)
    evaluate.add_argument("--images-per-caption", type=int, default=4, help="generated images per caption (default 4)")
    evaluate.add_argument("--num-real-images", type=int, default=512, help="real toy images for FID/KID (default 512)")
    evaluate.add_argument("--features", choices=["random", "clip"], default="random",
                          help="FID/KID feature network: a seeded random conv net or the trained CLIP (default random)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    evaluate.set_defaults(run=commands.evaluate)

    serve = command("serve", help="serve a trained model: a web page and a JSON API (needs the [serve] extra)")
    add_checkpoint_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--max-batch", type=int, default=8, help="images sampled together at most (default 8)")
    serve.add_argument("--batch-window", type=float, default=0.05,
                       help="seconds a request waits for others to share its forward pass (default 0.05)")
    serve.add_argument("--max-queue", type=int, default=32, help="queued requests before 503 (default 32)")
    serve.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header is NAME (repeatable; '*' answers any), e.g. the "
                            "public name of a reverse proxy; by default only the bound address and localhost")
    serve.set_defaults(run=commands.serve)

    embed = command("embed", help="precompute CLIP image embeddings for webdataset shards")
    embed.add_argument("urls", help="shards, e.g. data/{0000..0009}.tar")
    embed.add_argument("--clip", required=True, help="a CLIP saved by `dalle2 train clip` (its model folder, or a "
                       "Hugging Face Hub id of one: org/repo[@revision][/subfolder])")
    embed.add_argument("--out", required=True, help="folder for img_emb_<shard>.npy files")
    embed.add_argument("--shard-width", type=int, default=4, help="digits of the shard number in each key")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.set_defaults(run=commands.embed)

    config = command("config", help="validate a config file, or show the defaults of a kind")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_command = partial(config_sub.add_parser, parents=[debug])
    validate = config_command("validate", help="check a config file; print what is wrong")
    validate.add_argument("file")
    validate.set_defaults(run=commands.config_validate)
    show = config_command("show", help="every field of a kind's config, with defaults and descriptions")
    show.add_argument("--kind", choices=["clip", "prior", "decoder", "vae"], required=True)
    show.set_defaults(run=commands.config_show)
    add_manipulation_commands(command, add_checkpoint_arguments)
    example = config_command("example", help="list the example configs shipped with the package, or write one")
    example.add_argument("name", nargs="?", help="an example, e.g. toy_decoder (without it: list them)")
    example.add_argument("--out", default=".", help="folder to write it to (default: the current folder)")
    example.set_defaults(run=commands.config_example)
    pipeline_commands.register(sub)
    return parser


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help="one or more captions")
    add_checkpoint_arguments(parser)
    parser.add_argument("--num-images", type=int, default=4, help="images per caption (default 4)")
    parser.add_argument("--cond-scale", type=float, default=None,
                        help="decoder guidance scale on unet 1 (default: the pipeline's saved default)")
    parser.add_argument("--sampler", default=None, help="decoder sampler, every unet: ddpm | ddim | dpmpp_2m | euler | "
                        "heun (default: the pipeline's saved default)")
    parser.add_argument("--steps", type=int, default=None,
                        help="decoder sampling steps, every unet (default: the pipeline's saved default)")
    parser.add_argument("--prior-sampler", default=None, help="prior sampler: ddpm | ddim | dpmpp_2m | euler | heun "
                        "(default: the pipeline's saved default)")
    parser.add_argument("--prior-steps", type=int, default=None,
                        help="prior sampling steps (default: the pipeline's saved default)")
    parser.add_argument("--prior-cond-scale", type=float, default=None,
                        help="prior guidance scale (default: the pipeline's saved default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/samples", help="output folder (default outputs/samples)")
    parser.set_defaults(run=commands.sample)


def close_progress_bars() -> None:
    """Close the progress bars an exception left open, so they do not redraw after the error line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def report_error(error: BaseException, debug: bool) -> int:
    """Print ``error`` as the command's outcome; the exit status: 2 for a user's mistake, 1 for a bug of ours."""
    close_progress_bars()
    fresh_line = "\n" if sys.stderr.isatty() else ""  # a progress bar may have left the cursor mid-line
    if isinstance(error, KeyboardInterrupt):
        print(f"{fresh_line}interrupted", file=sys.stderr)
        return 130
    if isinstance(error, USER_ERRORS):
        if debug:
            traceback.print_exception(error)
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{fresh_line}error: {message}" + ("" if debug else " (--debug shows the traceback)"), file=sys.stderr)
        return 2
    traceback.print_exception(error)
    print(f"This is a bug in dalle2_pytorch ({type(error).__name__}), not a mistake of yours: please report it "
          f"with the traceback above and the command you ran ({DISTRIBUTION} issue tracker).", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with allow_downloads(getattr(args, "allow_download", False)):
            result = args.run(args)
    except (KeyboardInterrupt, Exception) as error:  # noqa: BLE001 - sorted into user errors and bugs
        return report_error(error, args.debug)
    return int(result or 0)


def dream(argv: Sequence[str] | None = None) -> int:
    """`dream "text"`: the seed README's command, the same as `dalle2 sample "text"`."""
    parser = argparse.ArgumentParser(prog="dream", description="generate images from text (= dalle2 sample)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    add_sample_arguments(parser)
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default {pipeline_commands.DEFAULT_THREADS})")
    args = parser.parse_args(argv)
    try:
        with allow_downloads(args.allow_download):
            pipeline_commands.apply_threads(args)
            return int(commands.sample(args) or 0)
    except (KeyboardInterrupt, Exception) as error:  # noqa: BLE001 - sorted into user errors and bugs
        return report_error(error, args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

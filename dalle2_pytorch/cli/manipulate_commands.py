"""`dalle2 vary`, `interpolate`, `edit`, `inpaint` and `outpaint`: unCLIP's image manipulations from the shell.

Each reads images (any size: shorter side resized to the pipeline's output size, centre crop), runs the matching
``DALLE2`` method (docs/manipulations.md) and writes every image plus a captioned ``grid.png``, like `dalle2 sample`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

IMAGE_HELP = "image file (PNG, JPEG, ...); resized and centre-cropped to the pipeline's image size"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated ints, e.g. 8,8,8,8") from None


def add_manipulation_commands(command: Callable[..., argparse.ArgumentParser],
                              add_checkpoint: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the five commands with ``command(name, help=...)`` (the parent parser's subcommand factory);
    ``add_checkpoint(parser)`` adds the CLI's ``--checkpoint`` (and ``--allow-download``)."""

    def common(parser: argparse.ArgumentParser, out: str) -> None:
        add_checkpoint(parser)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", default=f"outputs/{out}", help=f"output folder (default outputs/{out})")

    def sampling(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--text", default=None, help="caption for the new pixels (default: the image's own "
                            "CLIP embedding)")
        parser.add_argument("--sampler", default=None, help="decoder sampler, every unet: ddpm | ddim | dpmpp_2m | "
                            "euler | heun (default: the pipeline's)")
        parser.add_argument("--steps", type=int, default=None, help="decoder steps, every unet (default: the "
                            "pipeline's)")

    vary = command("vary", help="variations of images: CLIP embedding kept, decoder resampled (DDIM, eta > 0)")
    vary.add_argument("images", nargs="+", help=IMAGE_HELP)
    vary.add_argument("--num", type=int, default=4, help="variations per image (default 4)")
    vary.add_argument("--eta", type=float, default=1.0, help="DDIM eta of unet 1, 0 to 1 (default 1)")
    vary.add_argument("--steps", type=int, default=None, help="unet 1's DDIM steps (default 50)")
    vary.add_argument("--inverted", action="store_true", help="start from the image's DDIM-inverted noise "
                      "(closer variations) instead of fresh noise")
    common(vary, "variations")
    vary.set_defaults(run=vary_command)

    inter = command("interpolate", help="a strip between two images: slerp of CLIP embeddings and inverted noises")
    inter.add_argument("image_a", help=IMAGE_HELP)
    inter.add_argument("image_b", help=IMAGE_HELP)
    inter.add_argument("--num", type=int, default=5, help="images, both ends included (default 5)")
    inter.add_argument("--steps", type=int, default=None, help="DDIM inversion steps of unet 1 (default 50)")
    common(inter, "interpolation")
    inter.set_defaults(run=interpolate_command)

    edit = command("edit", help="edit images with a text diff (slerp towards z(to) - z(from), inverted noise kept)")
    edit.add_argument("images", nargs="+", help=IMAGE_HELP)
    edit.add_argument("--from-text", required=True, help="what the image shows now, e.g. 'a red circle'")
    edit.add_argument("--to-text", required=True, help="what it should show, e.g. 'a blue circle'")
    edit.add_argument("--amounts", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                      help="slerp amounts in [0, 1] (default 0.25 0.5 0.75)")
    edit.add_argument("--steps", type=int, default=None, help="DDIM inversion steps of unet 1 (default 50)")
    common(edit, "edits")
    edit.set_defaults(run=edit_command)

    inpaint = command("inpaint", help="regenerate part of an image (any sampler); the rest stays bit-exact")
    inpaint.add_argument("image", help=IMAGE_HELP)
    where = inpaint.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="mask picture: light pixels are kept, dark pixels regenerated")
    where.add_argument("--box", type=_ints, help="regenerate this box: left,top,right,bottom in output pixels")
    inpaint.add_argument("--num", type=int, default=4, help="inpaintings (default 4)")
    inpaint.add_argument("--resample-times", type=int, default=None, help="RePaint resampling per step "
                         "(default 5 for ddpm, 1 otherwise)")
    sampling(inpaint)
    common(inpaint, "inpaint")
    inpaint.set_defaults(run=inpaint_command)

    outpaint = command("outpaint", help="extend an image onto a larger canvas; the image stays bit-exact")
    outpaint.add_argument("image", help=IMAGE_HELP)
    grow = outpaint.add_mutually_exclusive_group(required=True)
    grow.add_argument("--pad", type=_ints, help="new pixels left,top,right,bottom (multiples of what the error "
                      "names)")
    grow.add_argument("--scale", type=float, help="canvas side over image side, e.g. 2")
    outpaint.add_argument("--num", type=int, default=4, help="outpaintings (default 4)")
    sampling(outpaint)
    common(outpaint, "outpaint")
    outpaint.set_defaults(run=outpaint_command)


# ---------------------------------------------------------------------------------- running them
def _load(args: argparse.Namespace):
    from dalle2_pytorch.dalle2 import DALLE2

    return DALLE2.from_pretrained(args.checkpoint)


def _read(pipeline, paths: Sequence[str]):
    import torch

    from dalle2_pytorch.data.image_inputs import read_image

    return torch.stack([read_image(path, pipeline.decoder.image_sizes[-1]) for path in paths])


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"--{name} {value}: expected at least 1")


def _write(images, captions: Sequence[str], out: str | Path, columns: int) -> int:
    from dalle2_pytorch.images import save_captioned_grid, save_image

    out = Path(out)
    for i, (image, caption) in enumerate(zip(images, captions)):
        save_image(image, out / f"{i:03d}_{caption.replace(' ', '_').replace('/', '_')[:60]}.png")
    grid = save_captioned_grid(images, captions, out / "grid.png", columns=columns)
    print(f"wrote {len(images)} images and {grid} to {out}")
    return 0


def vary_command(args: argparse.Namespace) -> int:
    _positive("num", args.num)
    pipeline = _load(args)
    images = pipeline.variations(_read(pipeline, args.images), num=args.num, eta=args.eta, seed=args.seed,
                                 steps=args.steps, inverted=args.inverted)
    captions = [f"{Path(p).stem} #{k + 1}" for p in args.images for k in range(args.num)]
    return _write(images, captions, args.out, args.num)


def interpolate_command(args: argparse.Namespace) -> int:
    pipeline = _load(args)
    a, b = _read(pipeline, [args.image_a, args.image_b])
    images = pipeline.interpolate(a, b, num=args.num, steps=args.steps, seed=args.seed)
    captions = [f"t={k / (args.num - 1):.2f}" for k in range(args.num)]
    return _write(images, captions, args.out, args.num)


def edit_command(args: argparse.Namespace) -> int:
    pipeline = _load(args)
    images = pipeline.text_diff(_read(pipeline, args.images), args.from_text, args.to_text, amounts=args.amounts,
                                steps=args.steps, seed=args.seed)
    captions = [f"{Path(p).stem} {a:g}" for p in args.images for a in args.amounts]
    return _write(images, captions, args.out, len(args.amounts))


def inpaint_command(args: argparse.Namespace) -> int:
    from dalle2_pytorch.data.image_inputs import box_mask, read_mask

    _positive("num", args.num)
    pipeline = _load(args)
    size = pipeline.decoder.image_sizes[-1]
    image = _read(pipeline, [args.image]).expand(args.num, -1, -1, -1)
    mask = read_mask(args.mask, size) if args.mask else box_mask(args.box, size)
    images = pipeline.inpaint(image, mask, text=args.text, sampler=args.sampler, steps=args.steps,
                              resample_times=args.resample_times, seed=args.seed)
    return _write(images, [f"{args.text or Path(args.image).stem} #{k + 1}" for k in range(args.num)], args.out,
                  args.num)


def outpaint_command(args: argparse.Namespace) -> int:
    _positive("num", args.num)
    pipeline = _load(args)
    image = _read(pipeline, [args.image]).expand(args.num, -1, -1, -1)
    images = pipeline.outpaint(image, pad=args.pad, scale=args.scale, text=args.text, sampler=args.sampler,
                               steps=args.steps, seed=args.seed)
    return _write(images, [f"{args.text or Path(args.image).stem} #{k + 1}" for k in range(args.num)], args.out,
                  args.num)

"""The picture of docs/manipulations.md: variations, an interpolation strip and two text-diff strips from the
trained toy pipeline (`dalle2 demo`).

    python benchmarks/manipulations_figure.py --checkpoint outputs/checkpoints --out docs/images/manipulations.png
"""

from __future__ import annotations

import argparse

import torch

from dalle2_pytorch import DALLE2
from dalle2_pytorch.data import ShapeSpec, render_shape
from dalle2_pytorch.images import save_captioned_grid

COLUMNS = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="outputs/checkpoints")
    parser.add_argument("--out", default="docs/images/manipulations.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipeline = DALLE2.from_pretrained(args.checkpoint).eval()
    red_circle, blue_square = (render_shape(ShapeSpec(c, s), 32) for c, s in (("red", "circle"), ("blue", "square")))
    green_triangle = render_shape(ShapeSpec("green", "triangle"), 32)
    cells, captions = [], []
    for source, name in ((red_circle, "red circle"), (green_triangle, "green triangle")):
        variations = pipeline.variations(source, num=COLUMNS - 1, seed=0, steps=20)
        cells += [source, *variations]
        captions += [f"source: {name}"] + [f"variation {k + 1}" for k in range(COLUMNS - 1)]
    frames = pipeline.interpolate(red_circle, blue_square, num=COLUMNS, steps=50)
    cells += list(frames)
    captions += [f"interpolate t={k / (COLUMNS - 1):.1f}" for k in range(COLUMNS)]
    amounts = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    for to_text in ("a blue circle", "a red square"):
        cells += list(pipeline.text_diff(red_circle, "a red circle", to_text, amounts=amounts, steps=50))
        captions += [f"-> {to_text.split(' ', 1)[1]} {a:.1f}" for a in amounts]
    save_captioned_grid(torch.stack(cells), captions, args.out, columns=COLUMNS, cell=96)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

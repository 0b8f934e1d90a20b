"""Built-in toy text-image data set: coloured shapes with templated captions.

Generated on the fly (no download), deterministic by ``(seed, index)``, and small enough that a tiny CPU model learns
it in minutes.  The default variant is the simplest ("a red circle": one centred shape on black); richer variants add
the position, the size and the background to the caption.  :mod:`dalle2_pytorch.data.toy_judge` reads an image back
and says which colour and shape it shows, so caption faithfulness of generated images can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

# Well separated in RGB (pairwise distance >= 150 of 441) and far from every background below.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "magenta": (210, 50, 210),
    "cyan": (40, 210, 220),
}
# Shapes that stay distinguishable at 32 px (fill ratios of their box: 0.79, 1.0, 0.5, 0.56 with different symmetry).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
# Centres as fractions of the image side (x, y); captions say "on the left", "at the top", ...
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.28),
    "bottom": (0.5, 0.72),
}
POSITION_PHRASES = {"center": "in the center", "left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom"}
# Shape "radius" (half the side of its bounding box) as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.16, "large": 0.26}
DEFAULT_RADIUS = SIZES["large"]
SQUARE_HALF_SIDE = 0.9  # a square of half side 0.9 r has about the area of a circle of radius r
SUPERSAMPLING = 4  # anti-aliased edges: render at 4x and average


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that decides one toy image: names from the vocabularies above plus exact geometry.

    ``center`` and ``radius`` are fractions of the image side; when left as None they come from ``position``/``size``.
    """

    colour: str
    shape: str
    position: str = "center"
    size: str = "large"
    background: str = "black"
    center: tuple[float, float] | None = None
    radius: float | None = None

    def __post_init__(self) -> None:
        for field, value, vocab in (("colour", self.colour, COLOURS), ("shape", self.shape, SHAPES),
                                    ("position", self.position, POSITIONS), ("size", self.size, SIZES),
                                    ("background", self.background, BACKGROUNDS)):
            if value not in vocab:
                raise ValueError(f"ShapeSpec: {field}={value!r} is not one of {list(vocab)}")

    def labels(self) -> dict[str, int]:
        """Integer ids into the full vocabularies (stable whatever subset a data set uses)."""
        return {
            "colour": list(COLOURS).index(self.colour),
            "shape": SHAPES.index(self.shape),
            "position": list(POSITIONS).index(self.position),
            "size": list(SIZES).index(self.size),
            "background": list(BACKGROUNDS).index(self.background),
        }


def spec_from_labels(labels: dict[str, int]) -> dict[str, str]:
    """Inverse of :meth:`ShapeSpec.labels` for whichever keys are present (ids -> names)."""
    vocabularies = {"colour": list(COLOURS), "shape": list(SHAPES), "position": list(POSITIONS),
                    "size": list(SIZES), "background": list(BACKGROUNDS)}
    return {key: vocabularies[key][int(value)] for key, value in labels.items() if key in vocabularies}


def shape_mask(shape: str, height: int, width: int, center_xy: tuple[float, float],
               half_extent_xy: tuple[float, float], supersampling: int = SUPERSAMPLING) -> np.ndarray:
    """Soft coverage in [0, 1] of ``shape`` whose bounding box is centred at ``center_xy`` (pixels) with half sizes
    ``half_extent_xy`` (pixels), on a ``height`` x ``width`` grid.  Shared by the renderer and the judge's templates."""
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {list(SHAPES)}")
    s = supersampling
    ys = (np.arange(height * s, dtype=np.float64) + 0.5) / s
    xs = (np.arange(width * s, dtype=np.float64) + 0.5) / s
    # Normalised coordinates: the bounding box is [-1, 1]^2.
    u = (xs[None, :] - center_xy[0]) / max(half_extent_xy[0], 1e-6)
    v = (ys[:, None] - center_xy[1]) / max(half_extent_xy[1], 1e-6)
    if shape == "circle":
        inside = u ** 2 + v ** 2 <= 1.0
    elif shape == "square":
        inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    elif shape == "triangle":  # apex at the top, base at the bottom
        inside = (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    else:  # cross: a plus sign with arms one third of the box wide
        arm = 1.0 / 3.0
        inside = ((np.abs(u) <= 1.0) & (np.abs(v) <= arm)) | ((np.abs(v) <= 1.0) & (np.abs(u) <= arm))
    inside = inside.astype(np.float32)
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def render_shape(spec: ShapeSpec, image_size: int = 32) -> torch.Tensor:
    """Render ``spec`` as a float image tensor in [0, 1] of shape (3, image_size, image_size)."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} must be an int >= 8")
    radius = spec.radius if spec.radius is not None else SIZES[spec.size]
    cx, cy = spec.center if spec.center is not None else POSITIONS[spec.position]
    half = radius * (SQUARE_HALF_SIDE if spec.shape == "square" else 1.0)
    coverage = shape_mask(spec.shape, image_size, image_size, (cx * image_size, cy * image_size),
                          (half * image_size, half * image_size))
    background = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32) / 255.0
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float32) / 255.0
    image = background[:, None, None] * (1.0 - coverage[None]) + colour[:, None, None] * coverage[None]
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def caption_for(spec: ShapeSpec, *, with_position: bool = False, with_size: bool = False,
                with_background: bool = False) -> str:
    """Templated caption, e.g. "a red circle", "a small blue square on the left on a white background"."""
    words = ["a"]
    if with_size:
        words.append(spec.size)
    words += [spec.colour, spec.shape]
    if with_position:
        words.append(POSITION_PHRASES[spec.position])
    if with_background:
        words.append(f"on a {spec.background} background")
    return " ".join(words)


def parse_caption(caption: str) -> dict[str, str]:
    """Attributes a templated caption names (only those present), e.g. {"colour": "red", "shape": "circle"}."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    text = caption.lower()
    tokens = text.replace(",", " ").split()
    found: dict[str, str] = {}
    background = next((name for name in BACKGROUNDS if f"{name} background" in text), None)
    if background is not None:
        found["background"] = background
        text = text.replace(f"{background} background", " ")
        tokens = text.split()
    for key, vocab in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES)):
        match = [word for word in tokens if word in vocab]
        if match:
            found[key] = match[0]
    for name, phrase in POSITION_PHRASES.items():
        if phrase in text:
            found["position"] = name
    if "colour" not in found or "shape" not in found:
        raise ValueError(f"caption {caption!r} does not name a toy colour ({list(COLOURS)}) and shape ({list(SHAPES)})")
    return found


class ToyShapesDataset(Dataset):
    """Procedural coloured-shape images with captions; item ``i`` is the same for the same ``seed``.

    Returns ``(image, caption, labels)``: image a float tensor in [0, 1] of shape (3, image_size, image_size), caption
    a str, labels a dict of int ids (colour, shape, position, size, background) into the full vocabularies.

    ``jitter`` moves the centre by up to half that fraction of the image side and scales the size by up to
    1 +- jitter, so the images of one caption form a small distribution rather than one picture.
    """

    def __init__(self, *, num_samples: int = 10_000, image_size: int = 32, seed: int = 0,
                 colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = DEFAULT_SHAPES,
                 with_position: bool = False, with_size: bool = False,
                 backgrounds: Sequence[str] = ("black",), jitter: float = 0.06) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} must be a positive int")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size={image_size!r} must be an int >= 8 (32-64 recommended)")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be an int >= 0")
        for name, values, vocab in (("colours", colours, COLOURS), ("shapes", shapes, SHAPES),
                                    ("backgrounds", backgrounds, BACKGROUNDS)):
            if isinstance(values, str) or len(values) == 0 or any(v not in vocab for v in values):
                raise ValueError(f"{name}={values!r} must be a non-empty list drawn from {list(vocab)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={values!r} has duplicates")
        if not 0.0 <= jitter <= 0.15:
            raise ValueError(f"jitter={jitter!r} must be in [0, 0.15] (larger moves shapes across position bins)")
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.colours = tuple(colours)
        self.shapes = tuple(shapes)
        self.backgrounds = tuple(backgrounds)
        self.with_position = with_position
        self.with_size = with_size
        self.jitter = jitter

    def __len__(self) -> int:
        return self.num_samples

    @property
    def with_background(self) -> bool:
        return len(self.backgrounds) > 1

    def spec(self, index: int) -> ShapeSpec:
        """The drawn spec of item ``index`` (deterministic by seed and index)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        colour = self.colours[rng.integers(len(self.colours))]
        shape = self.shapes[rng.integers(len(self.shapes))]
        background = self.backgrounds[rng.integers(len(self.backgrounds))]
        position = list(POSITIONS)[rng.integers(len(POSITIONS))] if self.with_position else "center"
        size = list(SIZES)[rng.integers(len(SIZES))] if self.with_size else "large"
        radius = SIZES[size] * (1.0 + rng.uniform(-self.jitter, self.jitter))
        cx, cy = POSITIONS[position]
        cx += rng.uniform(-self.jitter, self.jitter) / 2
        cy += rng.uniform(-self.jitter, self.jitter) / 2
        half = radius * (SQUARE_HALF_SIDE if shape == "square" else 1.0)
        cx, cy = float(np.clip(cx, half, 1 - half)), float(np.clip(cy, half, 1 - half))
        return ShapeSpec(colour=colour, shape=shape, position=position, size=size, background=background,
                         center=(cx, cy), radius=float(radius))

    def caption(self, spec: ShapeSpec) -> str:
        return caption_for(spec, with_position=self.with_position, with_size=self.with_size,
                           with_background=self.with_background)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict[str, int]]:
        spec = self.spec(int(index))
        return render_shape(spec, self.image_size), self.caption(spec), spec.labels()

    def render_range(self, start: int = 0,
                     stop: int | None = None) -> tuple[torch.Tensor, list[str], dict[str, torch.Tensor]]:
        """Items ``start..stop-1`` stacked: images (n, 3, H, W), captions, labels as (n,) long tensors.

        For small in-memory training runs, where a DataLoader over single items would cost more than the model."""
        stop = self.num_samples if stop is None else stop
        if not 0 <= start < stop <= self.num_samples:
            raise ValueError(f"start={start}, stop={stop} must satisfy 0 <= start < stop <= {self.num_samples}")
        images, captions, labels = zip(*(self[i] for i in range(start, stop)))
        stacked = {key: torch.tensor([label[key] for label in labels]) for key in labels[0]}
        return torch.stack(images), list(captions), stacked

    def all_captions(self) -> list[str]:
        """Every caption this variant can produce (e.g. 18 for the default 6 colours x 3 shapes)."""
        captions = []
        for background in self.backgrounds:
            for size in (SIZES if self.with_size else ["large"]):
                for colour in self.colours:
                    for shape in self.shapes:
                        for position in (POSITIONS if self.with_position else ["center"]):
                            spec = ShapeSpec(colour=colour, shape=shape, position=position, size=size,
                                             background=background)
                            captions.append(self.caption(spec))
        return captions


def vocabulary() -> dict[str, list[str]]:
    """Names of every colour, shape, position, size and background (label ids index these lists)."""
    return {"colour": list(COLOURS), "shape": list(SHAPES), "position": list(POSITIONS), "size": list(SIZES),
            "background": list(BACKGROUNDS)}


def caption_templates() -> list[str]:
    """The caption templates, from the default variant to the richest."""
    return ["a {colour} {shape}", "a {colour} {shape} {position}", "a {size} {colour} {shape}",
            "a {size} {colour} {shape} {position} on a {background} background"]

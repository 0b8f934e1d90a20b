"""Judge for the toy shapes data set: reads an image and says which colour, shape, position and size it shows.

Pure pixel analysis (no network), so caption faithfulness of generated images is measurable anywhere:
- background = median of the border pixels, named by the nearest background colour;
- foreground = the largest 4-connected blob of pixels far from the background;
- colour = nearest palette colour to the median of the blob's core (its edges are blended with the background);
- shape = the template (rendered by the data set's own renderer, fitted to the blob's bounding box) of highest IoU;
- position = nearest position centre to the bounding-box centre; size = bounding-box half extent vs. a threshold.
A blob spanning nearly the whole image, or matching no template with IoU >= 0.5, is "no shape" (fields None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .toy import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, SQUARE_HALF_SIDE, parse_caption, shape_mask, \
    spec_from_labels

FOREGROUND_DISTANCE = 0.25  # RGB distance (in [0, sqrt 3]) from the background that counts as foreground
MIN_BLOB_FRACTION = 0.004  # a blob smaller than this fraction of the image is "no shape"
MAX_EXTENT = 0.8  # toy shapes span at most ~55 % of the side; a blob spanning more of both sides is "no shape"
MIN_SHAPE_IOU = 0.5  # below this the blob matches no template well: "no shape"
SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 2 * 0.95


@dataclass(frozen=True)
class Judgement:
    """What the judge sees in one image; ``shape``/``colour``/... are None when no shape was found."""

    colour: str | None
    shape: str | None
    position: str | None
    size: str | None
    background: str
    shape_iou: float  # IoU of the best template; low values mean "a blob, but no clean shape"

    def as_dict(self) -> dict[str, str | None]:
        return {"colour": self.colour, "shape": self.shape, "position": self.position, "size": self.size,
                "background": self.background}


def to_numpy_image(image: Any) -> np.ndarray:
    """(H, W, 3) float array in [0, 1] from a PIL image, a (3, H, W) tensor (float in [0, 1] or uint8) or an array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must have shape (3, H, W), got {tuple(image.shape)}")
        array = image.detach().cpu()
        array = array.float() / 255.0 if array.dtype == torch.uint8 else array.float()
        return array.clamp(0, 1).permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must have shape (H, W, 3), got {image.shape}")
        return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else np.clip(image, 0, 1).astype(np.float32)
    raise TypeError(f"image must be a PIL.Image, torch.Tensor or numpy array, got {type(image).__name__}")


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 4-connected component of ``mask``.

    Run-length labelling: each row is cut into runs of foreground, runs that overlap between neighbouring rows are
    joined with union-find, so the Python loop is over runs (tens), not pixels (thousands)."""
    runs: list[tuple[int, int, int]] = []  # (row, start, stop)
    row_runs: list[range] = []
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    for y, edges in enumerate(np.diff(padded, axis=1)):
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        first = len(runs)
        runs.extend((y, int(a), int(b)) for a, b in zip(starts, stops))
        row_runs.append(range(first, len(runs)))
    if not runs:
        return np.zeros_like(mask, dtype=bool)
    parent = list(range(len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(1, len(row_runs)):
        above, below = row_runs[y - 1], row_runs[y]
        i, j = above.start, below.start
        while i < above.stop and j < below.stop:
            if runs[i][1] < runs[j][2] and runs[j][1] < runs[i][2]:  # the two runs share a column
                parent[root(i)] = root(j)
            if runs[i][2] < runs[j][2]:
                i += 1
            else:
                j += 1
    sizes: dict[int, int] = {}
    for index, (_, a, b) in enumerate(runs):
        sizes[root(index)] = sizes.get(root(index), 0) + b - a
    best = max(sizes, key=sizes.__getitem__)
    blob = np.zeros(mask.shape, dtype=bool)
    for index, (y, a, b) in enumerate(runs):
        if root(index) == best:
            blob[y, a:b] = True
    return blob


def _nearest(value: np.ndarray, palette: Mapping[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    colours = np.asarray([palette[name] for name in names], dtype=np.float32) / 255.0
    return names[int(np.argmin(((colours - value) ** 2).sum(axis=1)))]


def judge_image(image: Any, *, shapes: Sequence[str] = SHAPES) -> Judgement:
    """Say which colour, shape, position and size ``image`` shows (see the module docstring for how)."""
    pixels = to_numpy_image(image)
    height, width, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, BACKGROUNDS)
    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=2))
    blob = _largest_blob(distance > FOREGROUND_DISTANCE)
    if blob.sum() < max(3, MIN_BLOB_FRACTION * height * width):
        return Judgement(None, None, None, None, background, 0.0)
    # Anti-aliased or blurred edges: keep the pixels at least half way from the background to the shape's colour.
    shape_distance = float(np.percentile(distance[blob], 90))
    coverage = np.clip(distance / shape_distance, 0.0, 1.0) * blob  # soft estimate of how much shape a pixel holds
    blob = _largest_blob(blob & (distance > max(FOREGROUND_DISTANCE, 0.5 * shape_distance)))
    if blob.sum() < max(3, MIN_BLOB_FRACTION * height * width):
        return Judgement(None, None, None, None, background, 0.0)

    core = blob & (distance >= 0.75 * shape_distance)
    colour = _nearest(np.median(pixels[core if core.any() else blob], axis=0), COLOURS)

    rows, cols = np.nonzero(blob)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if (x1 - x0) > MAX_EXTENT * width and (y1 - y0) > MAX_EXTENT * height:
        return Judgement(None, None, None, None, background, 0.0)
    center = ((x0 + x1) / 2, (y0 + y1) / 2)
    half = ((x1 - x0) / 2, (y1 - y0) / 2)
    best_shape, best_iou = None, -1.0
    # Compare within the box plus a margin; coverage outside it counts only towards the union.
    cy0, cy1, cx0, cx1 = max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)
    crop = coverage[cy0:cy1, cx0:cx1]
    outside = float(coverage.sum() - crop.sum())
    for shape in shapes:
        template = shape_mask(shape, cy1 - cy0, cx1 - cx0, (center[0] - cx0, center[1] - cy0), half, supersampling=2)
        union = float(np.maximum(template, crop).sum()) + outside
        iou = float(np.minimum(template, crop).sum()) / union if union else 0.0
        if iou > best_iou:
            best_shape, best_iou = shape, iou

    if best_iou < MIN_SHAPE_IOU:
        return Judgement(colour, None, None, None, background, best_iou)
    center_fraction = np.asarray([center[0] / width, center[1] / height])
    position = min(POSITIONS, key=lambda name: float(((np.asarray(POSITIONS[name]) - center_fraction) ** 2).sum()))
    extent = max(half[0] / width, half[1] / height)
    if best_shape == "square":
        extent /= SQUARE_HALF_SIDE
    size = "small" if extent < SIZE_THRESHOLD else "large"
    return Judgement(colour, best_shape, position, size, background, best_iou)


def _expected_attributes(target: Any) -> dict[str, str]:
    if isinstance(target, str):
        return parse_caption(target)
    if isinstance(target, Mapping):
        values = {key: (int(value) if not isinstance(value, str) else value) for key, value in target.items()}
        names = {k: v for k, v in values.items() if isinstance(v, str)}
        names.update(spec_from_labels({k: v for k, v in values.items() if not isinstance(v, str)}))
        return names
    raise TypeError(f"a target must be a caption str or a labels dict, got {type(target).__name__}")


def matches(image: Any, target: Any, *, attributes: Sequence[str] | None = None) -> bool:
    """True when the judge's reading of ``image`` agrees with every attribute ``target`` names.

    ``target``: a caption ("a red circle on the left") or a labels dict (ids or names).  ``attributes`` restricts the
    comparison (e.g. ("colour", "shape")); by default a caption is checked on what it names and a labels dict on
    every key it holds (a data set's labels hold all five, so pass ``attributes`` to judge fewer).
    """
    expected = _expected_attributes(target)
    if attributes is not None:
        missing = [key for key in attributes if key not in expected]
        if missing:
            raise ValueError(f"attributes={list(attributes)} but the target {target!r} does not give {missing}")
        expected = {key: expected[key] for key in attributes}
    seen = judge_image(image).as_dict()
    return all(seen[key] == value for key, value in expected.items())


def _unbatch_labels(labels: Mapping[str, Any]) -> list[dict[str, int]]:
    """A collated labels dict (each value a tensor/list of length B) -> B dicts."""
    columns = {key: (value.tolist() if isinstance(value, torch.Tensor) else list(value))
               for key, value in labels.items()}
    lengths = {len(column) for column in columns.values()}
    if len(lengths) != 1:
        sizes = {key: len(column) for key, column in columns.items()}
        raise ValueError(f"collated labels have columns of different lengths: {sizes}")
    return [{key: column[i] for key, column in columns.items()} for i in range(lengths.pop())]


def faithfulness(images: Any, targets: Any, *, attributes: Sequence[str] | None = None) -> float:
    """Fraction of ``images`` that show what their targets say (see :func:`matches`).

    ``images``: a (B, 3, H, W) tensor or a sequence of images; ``targets``: B captions, B labels dicts, or one collated
    labels dict (as a DataLoader returns).  ``attributes`` e.g. ("colour", "shape") restricts what is compared.
    """
    if isinstance(targets, Mapping):
        targets = _unbatch_labels(targets)
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images tensor must have shape (B, 3, H, W), got {tuple(images.shape)}")
        images = list(images)
    targets = list(targets)
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    if not images:
        raise ValueError("faithfulness needs at least one image")
    hits = sum(matches(image, target, attributes=attributes) for image, target in zip(images, targets))
    return hits / len(images)

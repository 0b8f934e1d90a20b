"""Image preprocessing with Pillow, NumPy and torch only (no torchvision).

Load to RGB, resize the shorter side (antialiased), centre / random / random-resized crop, horizontal flip, and
convert to a float tensor in [0, 1].  Every random choice draws from an explicit ``torch.Generator`` so a pipeline
is reproducible (and resumable) given its seed.
"""

from __future__ import annotations

import io
import math
import os
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

CROP_MODES = ("center", "random", "random_resized")


def load_image(source: str | os.PathLike | bytes | BinaryIO) -> Image.Image:
    """Open an image file, bytes or file object as RGB; transparent images are composited onto white.

    Raises ``OSError``/``PIL.UnidentifiedImageError`` for unreadable data (callers that must not stop catch these).
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as image:
        image.load()  # decode now, so truncated files fail here and not later
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return image.convert("RGB")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is ``size`` pixels, keeping the aspect ratio (bicubic, antialiased)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} must be a positive int")
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.BICUBIC, reducing_gap=None)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` square (the image must be at least that large)."""
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {width}x{height}; resize first")
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform int in [0, high]."""
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_crop(image: Image.Image, size: int, generator: torch.Generator | None = None) -> Image.Image:
    """A ``size`` x ``size`` square at a random place."""
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {width}x{height}; resize first")
    left, top = _randint(width - size, generator), _randint(height - size, generator)
    return image.crop((left, top, left + size, top + size))


def random_resized_crop(image: Image.Image, size: int, *, scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> Image.Image:
    """A random box covering ``scale`` of the area with aspect in ``ratio`` (log-uniform), resized to ``size``.

    Falls back to the centred largest square after 10 failed draws (as the usual Inception-style crop does)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale={scale!r} must satisfy 0 < low <= high <= 1")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio={ratio!r} must satisfy 0 < low <= high")
    width, height = image.size
    area = width * height
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        box_w = round(math.sqrt(target_area * aspect))
        box_h = round(math.sqrt(target_area / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            left, top = _randint(width - box_w, generator), _randint(height - box_h, generator)
            return image.resize((size, size), Image.BICUBIC, box=(left, top, left + box_w, top + box_h))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def horizontal_flip(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 tensor in [0, 1] from an RGB PIL image."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImagePreprocessor:
    """Callable ``(PIL image, generator=None) -> (3, size, size) tensor in [0, 1]``.

    crop: "center" (resize shorter side, centre crop), "random" (resize shorter side, random crop) or
    "random_resized" (random box of ``crop_scale`` of the area, resized).  ``random_flip`` mirrors half the images.
    """

    def __init__(self, *, image_size: int, crop: str = "center", random_flip: bool = False,
                 crop_scale: tuple[float, float] = (0.5, 1.0)) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive int")
        if crop not in CROP_MODES:
            raise ValueError(f"crop={crop!r} must be one of {CROP_MODES}")
        if crop == "random_resized" and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale={crop_scale!r} must satisfy 0 < low <= high <= 1")
        self.image_size = image_size
        self.crop = crop
        self.random_flip = random_flip
        self.crop_scale = tuple(crop_scale)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.crop == "random_resized":
            image = random_resized_crop(image, self.image_size, scale=self.crop_scale, generator=generator)
        else:
            image = resize_shorter_side(image, self.image_size)
            if self.crop == "center":
                image = center_crop(image, self.image_size)
            else:
                image = random_crop(image, self.image_size, generator)
        if self.random_flip and float(torch.rand((), generator=generator)) < 0.5:
            image = horizontal_flip(image)
        return to_tensor(image)

    def __repr__(self) -> str:
        return (f"ImagePreprocessor(image_size={self.image_size}, crop={self.crop!r}, "
                f"random_flip={self.random_flip}, crop_scale={self.crop_scale})")

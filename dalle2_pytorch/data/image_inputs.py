"""Images and masks that users hand to the manipulations (`dalle2 vary/edit/inpaint ...`, the web app's uploads).

A picture of any size becomes a (3, size, size) tensor in [0, 1] (shorter side resized, centre crop); a mask
picture becomes a (size, size) bool tensor, True where the image is kept (light pixels), the same convention as
``DALLE2.inpaint``.  Unreadable data is a ValueError that says what was expected.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from dalle2_pytorch.data.preprocess import center_crop, load_image, resize_shorter_side, to_tensor

Source = str | os.PathLike | bytes | BinaryIO


def _open(source: Source, what: str) -> Image.Image:
    try:
        return load_image(source)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        name = "the upload" if isinstance(source, (bytes, bytearray)) else repr(str(source))
        raise ValueError(f"{what}: {name} is not a readable image (PNG, JPEG, WebP, ...): {error}") from None


def square_image(picture: Image.Image, size: int) -> Image.Image:
    """``picture`` with its shorter side resized to ``size`` and the centre square cut out."""
    return center_crop(resize_shorter_side(picture, size), size)


def read_image(source: Source, size: int) -> torch.Tensor:
    """(3, size, size) float tensor in [0, 1] from an image file, bytes or file object."""
    return to_tensor(square_image(_open(source, "image"), size))


def read_mask(source: Source, size: int) -> torch.Tensor:
    """(size, size) bool mask from a picture: light pixels (grey level ≥ 128) are kept, dark ones regenerated."""
    picture = square_image(_open(source, "mask"), size).convert("L")
    return to_tensor(picture.convert("RGB"))[0] >= 0.5


def box_mask(box: Sequence[int], size: int) -> torch.Tensor:
    """(size, size) mask that regenerates the box ``(left, top, right, bottom)`` (pixels, right/bottom excluded)."""
    if len(box) != 4 or not all(isinstance(v, int) for v in box):
        raise ValueError(f"box={tuple(box)!r}: expected 4 ints left, top, right, bottom")
    left, top, right, bottom = box
    if not (0 <= left < right <= size and 0 <= top < bottom <= size):
        raise ValueError(f"box={tuple(box)!r} must lie inside the {size}x{size} image with left < right, top < bottom")
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[top:bottom, left:right] = False
    return mask

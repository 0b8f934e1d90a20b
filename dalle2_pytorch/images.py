"""Image tensors to pictures: PIL images, grids (plain or captioned) and PNG files written atomically (Pillow only).

One place for what the pipeline, the CLI, the trackers, the demo and the VAE trainer write.  Tensors are
``(c, h, w)`` or ``(b, c, h, w)`` with 1 or 3 channels; ``value_range`` says which values map to black and white
(``(0, 1)`` for pipeline outputs, ``(-1, 1)`` for what a VAE sees).  Values outside it are clamped.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dalle2_pytorch.atomic import atomic_write_bytes

__all__ = ["caption_slug", "captioned_grid", "wrap_caption", "make_grid", "resize_image_to", "save_captioned_grid", "save_image", "to_pil",
           "to_pil_images", "to_uint8", "write_png"]

RESIZE_MODES = ("nearest", "bilinear")


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def resize_image_to(image: torch.Tensor, size: int | Sequence[int], *, mode: str = "nearest",
                    clamp_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Resize ``(b, c, h, w)`` or ``(c, h, w)`` images to ``size`` (an int for square, or ``(h, w)``).

    ``mode='nearest'`` (default) is what the decoder cascade uses between resolutions, as in the reference;
    ``'bilinear'`` is antialiased when shrinking, for preparing data.  Same size in: the input comes back
    unchanged.  ``clamp_range`` clamps the result."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {list(RESIZE_MODES)}")
    if isinstance(size, int) and not isinstance(size, bool):
        target = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        target = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size={size!r} must be an int or a pair of ints (height, width)")
    if min(target) < 1:
        raise ValueError(f"size={size!r} must be positive")
    if image.ndim not in (3, 4):
        raise ValueError(f"image must have shape (b, c, h, w) or (c, h, w), got {tuple(image.shape)}")
    if tuple(image.shape[-2:]) == target:
        return image
    batched = image if image.ndim == 4 else image.unsqueeze(0)
    if mode == "nearest":
        out = F.interpolate(batched, size=target, mode="nearest")
    else:
        shrinking = target[0] < batched.shape[-2] or target[1] < batched.shape[-1]
        out = F.interpolate(batched if batched.is_floating_point() else batched.float(), size=target,
                            mode="bilinear", align_corners=False, antialias=shrinking)
    if clamp_range is not None:
        out = out.clamp(*clamp_range)
    return out if image.ndim == 4 else out.squeeze(0)


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Map ``value_range`` to 0..255 (clamped, rounded): a uint8 CPU tensor of the same shape."""
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    scaled = (images.detach().float().cpu() - low) / (high - low)
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil_images(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> list[Image.Image]:
    """A ``(b, c, h, w)`` batch as PIL images: ``'L'`` for one channel, ``'RGB'`` for three."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be a (b, 1 or 3, h, w) tensor, got {_shape(images)}")
    array = to_uint8(images, value_range).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def to_pil(image: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Image.Image:
    """One ``(c, h, w)`` image as an RGB PIL image (a single channel is repeated as grey)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be a (3, H, W) or (1, H, W) tensor, got {_shape(image)}")
    pixels = to_uint8(image, value_range)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), mode="RGB")


def make_grid(rows: Sequence[torch.Tensor], padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Stack batches (each (n, c, h, w), same shapes) as rows of a (c, H, W) grid with ``padding`` pixels between."""
    if not rows:
        raise ValueError("make_grid needs at least one row of images")
    first = rows[0]
    if not isinstance(first, torch.Tensor) or first.ndim != 4:
        raise ValueError(f"every grid row must be a (n, c, h, w) tensor, got {_shape(first)}")
    n, c, h, w = first.shape
    for row in rows:
        if not isinstance(row, torch.Tensor) or row.shape != first.shape:
            raise ValueError(f"every grid row must have shape {tuple(first.shape)}, got {_shape(row)}")
    height = len(rows) * (h + padding) + padding
    width = n * (w + padding) + padding
    grid = torch.full((c, height, width), pad_value, dtype=torch.float32)
    for r, row in enumerate(rows):
        for i, img in enumerate(row.detach().float().cpu()):
            top, left = padding + r * (h + padding), padding + i * (w + padding)
            grid[:, top:top + h, left:left + w] = img
    return grid


def write_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as a PNG, atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_image(image: torch.Tensor, path: str | os.PathLike,
               value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write one ``(c, h, w)`` image as an RGB PNG."""
    return write_png(to_pil(image, value_range), path)


def caption_slug(caption: str, max_length: int = 60) -> str:
    """A caption as a safe file-name part: ASCII letters, digits and single underscores, at most ``max_length``
    characters, never empty.  No path separator, dot or other punctuation survives, so a caption such as
    ``x/../../f`` names a file inside the output folder (``x_f``), never outside it."""
    ascii_text = unicodedata.normalize("NFKD", str(caption)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")[:max_length].rstrip("_")
    return slug or "image"


def wrap_caption(caption: str, fits) -> list[str]:
    """``caption`` cut into lines at spaces, each line short enough for ``fits(line)``; a word too long for one line
    is cut within the word.  Nothing is dropped: the lines joined by spaces give the caption back."""
    lines: list[str] = []
    current = ""
    for word in caption.split():
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        while not fits(word) and len(word) > 1:  # a word longer than a line: cut it
            cut = max(1, max(i for i in range(1, len(word) + 1) if fits(word[:i]) or i == 1))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines or [""]


def captioned_grid(images: torch.Tensor | Sequence[torch.Tensor], captions: Sequence[str], *, columns: int = 4,
                   cell: int = 96, caption_height: int = 14) -> Image.Image:
    """A grid of ``images`` in [0, 1] (upscaled to ``cell`` px, nearest) with each caption written beneath its image,
    wrapped onto as many lines (``caption_height`` px each) as the longest caption needs."""
    images = list(images)
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("captioned_grid needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    pad = 4
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [wrap_caption(str(caption), lambda line: measure.textlength(line, font=font) <= cell)
               for caption in captions]
    text_height = caption_height * max(len(lines) for lines in wrapped)
    width = columns * (cell + pad) + pad
    height = rows * (cell + text_height + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (image, lines) in enumerate(zip(images, wrapped)):
        r, c = divmod(i, columns)
        left, top = pad + c * (cell + pad), pad + r * (cell + text_height + pad)
        canvas.paste(to_pil(image).resize((cell, cell), Image.NEAREST), (left, top))
        for j, line in enumerate(lines):
            draw.text((left, top + cell + 1 + j * caption_height), line, fill=(0, 0, 0), font=font)
    return canvas


def save_captioned_grid(images: torch.Tensor | Sequence[torch.Tensor], captions: Sequence[str],
                        path: str | os.PathLike, *, columns: int = 4, cell: int = 96) -> Path:
    """Write :func:`captioned_grid` as a PNG, atomically."""
    return write_png(captioned_grid(images, captions, columns=columns, cell=cell), path)

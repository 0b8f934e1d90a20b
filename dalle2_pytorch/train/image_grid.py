"""Write generated images: one PNG per image, and a grid with a caption under each cell (Pillow only)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from dalle2_pytorch.serialization import atomic_write_bytes


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def _write_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    return _write_png(to_pil(image), path)


def captioned_grid(images: torch.Tensor | Sequence[torch.Tensor], captions: Sequence[str], *, columns: int = 4,
                   cell: int = 96, caption_height: int = 14) -> Image.Image:
    """A grid of ``images`` (upscaled to ``cell`` px, nearest) with each caption written beneath its image."""
    images = list(images)
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("captioned_grid needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    pad = 4
    font = ImageFont.load_default()
    width = columns * (cell + pad) + pad
    height = rows * (cell + caption_height + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        left, top = pad + c * (cell + pad), pad + r * (cell + caption_height + pad)
        canvas.paste(to_pil(image).resize((cell, cell), Image.NEAREST), (left, top))
        text = caption if draw.textlength(caption, font=font) <= cell else caption[: max(1, cell // 6)] + "…"
        draw.text((left, top + cell + 1), text, fill=(0, 0, 0), font=font)
    return canvas


def save_captioned_grid(images, captions: Sequence[str], path: str | os.PathLike, *, columns: int = 4,
                        cell: int = 96) -> Path:
    return _write_png(captioned_grid(images, captions, columns=columns, cell=cell), path)

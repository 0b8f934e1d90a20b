"""Tile image batches into one grid and write it as a PNG (Pillow), atomically."""

from __future__ import annotations

import io
import os
from typing import Sequence

import torch
from PIL import Image

from dalle2_pytorch.serialization import atomic_write_bytes


def make_grid(rows: Sequence[torch.Tensor], padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Stack batches (each (n, c, h, w), same shapes) as rows of a (c, H, W) grid with ``padding`` pixels between."""
    if not rows:
        raise ValueError("make_grid needs at least one row of images")
    n, c, h, w = rows[0].shape
    for row in rows:
        if row.shape != rows[0].shape:
            raise ValueError(f"every grid row must have shape {tuple(rows[0].shape)}, got {tuple(row.shape)}")
    height = len(rows) * (h + padding) + padding
    width = n * (w + padding) + padding
    grid = torch.full((c, height, width), pad_value, dtype=torch.float32)
    for r, row in enumerate(rows):
        for i, img in enumerate(row.detach().float().cpu()):
            top, left = padding + r * (h + padding), padding + i * (w + padding)
            grid[:, top:top + h, left:left + w] = img
    return grid


def save_png(img: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a (c, h, w) image with values in [-1, 1] (1 or 3 channels) as an 8-bit PNG."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"save_png needs a (1 or 3, h, w) image, got shape {tuple(img.shape)}")
    pixels = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())

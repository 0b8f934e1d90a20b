"""A synthetic captioned image set for CLIP learning tests: coloured shapes on a dark background.

Each caption names a colour and a shape ("a red square"); each image draws that shape at a random
position and size, so held-out images are new instances of every caption.
"""

from __future__ import annotations

import torch

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.2, 1.0), "yellow": (1.0, 0.9, 0.1)}
SHAPES = ("square", "circle", "triangle")
CAPTIONS = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]


def draw(colour: str, shape: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """One (3, size, size) image in [0, 1]."""
    radius = size * (0.3 + 0.1 * torch.rand((), generator=generator).item())
    margin = radius + 1
    cy, cx = (margin + (size - 2 * margin) * torch.rand(2, generator=generator)).tolist()
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dy, dx = ys - cy, xs - cx
    if shape == "square":
        inside = (dy.abs() <= radius * 0.85) & (dx.abs() <= radius * 0.85)
    elif shape == "circle":
        inside = dy ** 2 + dx ** 2 <= radius ** 2
    else:  # triangle pointing up: below the apex, inside two slanted edges
        inside = (dy <= radius * 0.8) & (dy >= -radius) & (dx.abs() <= (dy + radius) * 0.6)
    image = 0.05 * torch.rand(3, size, size, generator=generator)
    colour_vec = torch.tensor(COLOURS[colour])[:, None, None]
    return torch.where(inside, colour_vec.expand(3, size, size), image)


def make_batch(indices: list[int], size: int, generator: torch.Generator) -> torch.Tensor:
    """Images for caption indices ``indices`` (into :data:`CAPTIONS`), shape (len, 3, size, size)."""
    images = []
    for index in indices:
        colour, shape = CAPTIONS[index].split(" ")[1:]
        images.append(draw(colour, shape, size, generator))
    return torch.stack(images)

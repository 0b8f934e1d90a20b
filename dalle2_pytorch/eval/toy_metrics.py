"""Caption faithfulness on the toy shapes set, read by the pixel judge (`dalle2_pytorch.data.toy_judge`).

The judge needs no network, so this metric is exact and free: it says which share of generated images shows the
colour, the shape (and, for richer captions, position/size/background) that the caption asks for.
"""

from __future__ import annotations

from typing import Sequence

import torch

from dalle2_pytorch.data.toy import parse_caption
from dalle2_pytorch.data.toy_judge import judge_image

DEFAULT_ATTRIBUTES = ("colour", "shape")


def toy_faithfulness(images: torch.Tensor, captions: Sequence[str], *,
                     attributes: Sequence[str] = DEFAULT_ATTRIBUTES) -> dict[str, float]:
    """Share of ``images`` (B, 3, H, W) in [0, 1] that match their toy ``captions`` on every one of ``attributes``.

    Returns ``{"faithfulness": all attributes right, "<attribute>_accuracy": each one alone,
    "no_shape_rate": images where the judge found no shape}``.  A caption that does not name an attribute in
    ``attributes`` is a ValueError (e.g. asking for ``"position"`` of "a red circle").
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (batch, 3, height, width) tensor, got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, one per image, not a single string")
    captions = list(captions)
    if len(captions) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(captions)} captions")
    if not captions:
        raise ValueError("toy_faithfulness needs at least one image")
    attributes = tuple(attributes)
    if not attributes:
        raise ValueError("attributes must name at least one of colour, shape, position, size, background")
    hits = {name: 0 for name in attributes}
    all_right = no_shape = 0
    for image, caption in zip(images, captions):
        expected = parse_caption(caption)
        missing = [name for name in attributes if name not in expected]
        if missing:
            raise ValueError(f"attributes={list(attributes)} but the caption {caption!r} does not name {missing}")
        seen = judge_image(image).as_dict()
        no_shape += seen["shape"] is None
        right = [seen[name] == expected[name] for name in attributes]
        for name, ok in zip(attributes, right):
            hits[name] += ok
        all_right += all(right)
    count = len(captions)
    result = {"faithfulness": all_right / count}
    result.update({f"{name}_accuracy": hits[name] / count for name in attributes})
    result["no_shape_rate"] = no_shape / count
    return result

"""Inputs of RePaint inpainting for the cascade: checking, resizing per unet, and the final paste.

``inpaint_mask`` is True (or 1) where ``inpaint_image`` is kept.  Every unet of the cascade
inpaints at its own resolution (image and mask resized with nearest neighbours); the decoder's
output is finally overwritten with the given pixels wherever the mask is set, so the known
region comes back bit for bit.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def check_inpaint_inputs(inpaint_image: Optional[Tensor], inpaint_mask: Optional[Tensor], *, channels: int,
                         batch_size: int) -> Optional[tuple[Tensor, Tensor]]:
    """``(image (b, c, h, w), mask (b, 1, h, w) bool)`` or None when not inpainting."""
    if inpaint_image is None and inpaint_mask is None:
        return None
    if inpaint_image is None or inpaint_mask is None:
        raise ValueError("inpainting needs both inpaint_image and inpaint_mask (bool, True where the image is kept)")
    if inpaint_image.ndim != 4 or inpaint_image.shape[1] != channels:
        raise ValueError(f"inpaint_image must have shape (batch, {channels}, height, width), "
                         f"got {tuple(inpaint_image.shape)}")
    mask = inpaint_mask
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != inpaint_image.shape[-2:]:
        raise ValueError(f"inpaint_mask must have shape (batch, height, width) matching inpaint_image "
                         f"{tuple(inpaint_image.shape)}, got {tuple(inpaint_mask.shape)}")
    if mask.dtype != torch.bool:
        if not torch.all((mask == 0) | (mask == 1)):
            raise ValueError("inpaint_mask must be boolean (or 0/1): True where inpaint_image is kept")
        mask = mask.bool()
    if inpaint_image.shape[0] != batch_size or mask.shape[0] != batch_size:
        raise ValueError(f"inpaint_image and inpaint_mask have batch sizes {inpaint_image.shape[0]} and "
                         f"{mask.shape[0]}; expected {batch_size} (the batch being sampled)")
    return inpaint_image, mask


def resize_mask(mask: Tensor, size: int) -> Tensor:
    """Nearest resize of a (b, 1, h, w) bool mask to ``size``×``size``."""
    if mask.shape[-1] == size and mask.shape[-2] == size:
        return mask
    return F.interpolate(mask.float(), size=(size, size), mode="nearest").bool()


def paste_known(output: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """``output`` with ``image``'s pixels wherever ``mask`` is set (image resized to match if needed)."""
    size = output.shape[-1]
    if image.shape[-1] != size or image.shape[-2] != output.shape[-2]:
        image = F.interpolate(image.float(), size=output.shape[-2:], mode="nearest").to(output.dtype)
        mask = resize_mask(mask, size)
    return torch.where(mask.to(output.device), image.to(output), output)

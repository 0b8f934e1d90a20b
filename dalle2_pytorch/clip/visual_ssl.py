"""Image self-supervision for CLIP's visual tower: SimCLR (as in SLIP) or SimSiam (as in DeCLIP).

Two random views of every image are made in torch (random resized crop with horizontal flip via an
affine grid, and brightness/contrast/saturation jitter), both are encoded by the vision tower
(pooled CLS output), and the views of one image are pulled together:

* ``simclr``: a projection MLP and the NT-Xent loss (temperature 0.1) against the other 2b - 2 views;
* ``simsiam``: a projection MLP, a predictor MLP and the negative cosine between each view's
  prediction and the other view's (stop-gradient) projection.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

VISUAL_SSL_TYPES = ("simclr", "simsiam")


def random_view(images: torch.Tensor, min_area: float = 0.4, jitter: float = 0.4) -> torch.Tensor:
    """One random augmentation of each image of the (b, c, h, w) batch, same size."""
    b, c = images.shape[:2]
    device, dtype = images.device, images.dtype
    area = torch.empty(b, device=device).uniform_(min_area, 1.0)
    log_ratio = torch.empty(b, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
    scale_x = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    scale_y = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    shift_x = (torch.rand(b, device=device) * 2 - 1) * (1 - scale_x)
    shift_y = (torch.rand(b, device=device) * 2 - 1) * (1 - scale_y)
    flip = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    zeros = torch.zeros(b, device=device)
    theta = torch.stack((torch.stack((scale_x * flip, zeros, shift_x), -1),
                         torch.stack((zeros, scale_y, shift_y), -1)), dim=1).to(dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def factor() -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=device, dtype=dtype).uniform_(1 - jitter, 1 + jitter)

    views = views * factor()  # brightness
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = (views - mean) * factor() + mean  # contrast
    if c == 3:
        gray = (views * torch.tensor([0.299, 0.587, 0.114], device=device, dtype=dtype)[:, None, None]).sum(1, keepdim=True)
        views = (views - gray) * factor() + gray  # saturation
    return views


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2b - 1 views."""
    z = F.normalize(torch.cat((z1, z2)), dim=-1)
    logits = z @ z.t() / temperature
    n = z1.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat((torch.arange(n, 2 * n), torch.arange(0, n))).to(z.device)
    return F.cross_entropy(logits, targets)


def _mlp(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.LayerNorm(dim_hidden), nn.GELU(), nn.Linear(dim_hidden, dim_out))


class VisualSelfSupervision(nn.Module):
    """The image SSL loss of kind ``'simclr'`` or ``'simsiam'`` over an image encoder ``(b,c,h,w) -> (b,d)``."""

    def __init__(self, dim: int, kind: str, projection_dim: int = 128) -> None:
        super().__init__()
        if kind not in VISUAL_SSL_TYPES:
            raise ValueError(f"visual_ssl_type must be one of {VISUAL_SSL_TYPES}, got {kind!r}")
        self.kind = kind
        if kind == "simclr":
            self.projector = _mlp(dim, dim, projection_dim)
        else:
            self.projector = _mlp(dim, dim, dim)
            self.predictor = _mlp(dim, max(dim // 4, 8), dim)

    def forward(self, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        views = torch.cat((random_view(images), random_view(images)))
        z1, z2 = self.projector(encode(views)).chunk(2)
        if self.kind == "simclr":
            return nt_xent(z1, z2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean()
                 + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2

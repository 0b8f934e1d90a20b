"""PatchGAN discriminator and the adversarial losses of the VQGAN.

The discriminator scores overlapping patches (a logit map, not one number), which pushes the
autoencoder toward sharp local texture while the reconstruction loss keeps the global content.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Discriminator(nn.Module):
    """Strided convs (``dim * 2**i`` channels for ``layers`` stages) ending in a 1-channel logit map."""

    def __init__(self, *, dim: int, channels: int, layers: int, groups: int = 16,
                 init_kernel_size: int = 5) -> None:
        super().__init__()
        dims = [dim * 2 ** i for i in range(layers)]
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(channels, dims[0], init_kernel_size, padding=init_kernel_size // 2), nn.LeakyReLU(0.1))]
        for dim_in, dim_out in zip(dims[:-1], dims[1:]):
            blocks.append(nn.Sequential(
                nn.Conv2d(dim_in, dim_out, 4, stride=2, padding=1),
                nn.GroupNorm(math.gcd(groups, dim_out), dim_out),
                nn.LeakyReLU(0.1),
            ))
        self.blocks = nn.Sequential(*blocks)
        self.to_logits = nn.Sequential(nn.Conv2d(dims[-1], dims[-1], 1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(dims[-1], 1, 3, padding=1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.blocks(img))


def hinge_discr_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.relu(1 + fake).mean() + F.relu(1 - real).mean()


def hinge_gen_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def bce_discr_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake).mean() + F.softplus(-real).mean()


def bce_gen_loss(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()


def gradient_penalty(images: torch.Tensor, logits: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * E[(||d logits / d images|| - 1)^2]`` (WGAN-GP form); ``images`` must require grad."""
    (grads,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    norms = grads.flatten(1).float().norm(2, dim=1)
    return weight * ((norms - 1) ** 2).mean()


def adaptive_gan_weight(target_loss: torch.Tensor, gen_loss: torch.Tensor, last_layer_weight: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """Scale for the generator loss so its gradient at the last layer matches ``target_loss``'s (Esser et al.)."""
    (target_grad,) = torch.autograd.grad(target_loss, last_layer_weight, retain_graph=True)
    (gen_grad,) = torch.autograd.grad(gen_loss, last_layer_weight, retain_graph=True)
    weight = target_grad.float().norm() / (gen_grad.float().norm() + 1e-8)
    return weight.clamp(max=max_weight).detach()

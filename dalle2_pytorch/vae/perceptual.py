"""Perceptual losses for the VQGAN, with an injectable feature network.

Choices (the ``perceptual`` argument of :class:`~dalle2_pytorch.vae.VQGanVAE`):

* ``None`` - no perceptual term; cheapest, reconstructions are blurrier.
* ``'lpips'`` - LPIPS with VGG16 features (Zhang et al. 2018), the usual VQGAN choice.  Needs the optional
  ``lpips`` package (which pulls torchvision) and downloads VGG16 weights on first use; about 15 GFLOPs
  per 256x256 image for each of the two images compared.
* ``'random'`` - a small frozen conv net with seeded random weights (:class:`RandomFeatureNet`).  No download,
  a few percent of the VAE's cost; random conv features still compare local structure and edges, so it is a
  usable stand-in for tests and toy runs, though weaker than trained VGG features.
* ``'auto'`` - ``'lpips'`` when the ``lpips`` package is installed, otherwise ``None`` (with a warning).
* any ``nn.Module`` - your feature network: ``net(img) -> tensor or list of tensors``; the loss compares
  channel-normalised features.  Modules without ``save_pretrained`` are not written into the VAE's config.

The feature network is frozen and kept outside the VAE's parameters and state dict: it is not trained,
not saved with the weights, and moved to the images' device on first use.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from dalle2_pytorch.init_config import lists_as_tuples
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PERCEPTUAL_CHOICES = ("auto", "lpips", "random", None)
_warned_auto = False


def lpips_available() -> bool:
    return importlib.util.find_spec("lpips") is not None


class RandomFeatureNet(PretrainedMixin, nn.Module):
    """Frozen conv net with weights drawn from ``seed``: features after each stride-2 stage."""

    @register_to_config(convert=lists_as_tuples)
    def __init__(self, *, channels: int = 3, dims: Sequence[int] = (32, 64, 128), seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        dim_in = channels
        for dim_out in dims:
            conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)
            with torch.no_grad():
                bound = (3.0 / (dim_in * 9)) ** 0.5 * 2 ** 0.5
                conv.weight.copy_((torch.rand(conv.weight.shape, generator=generator) * 2 - 1) * bound)
                conv.bias.zero_()
            self.stages.append(nn.Sequential(conv, nn.ReLU()))
            dim_in = dim_out
        self.requires_grad_(False)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            img = stage(img)
            features.append(img)
        return features


def _follow_input(net: nn.Module, like: torch.Tensor) -> None:
    param = next(iter(net.parameters()), None)
    if param is not None and param.device != like.device:
        net.to(like.device)


class FeatureDistance:
    """Mean squared distance between channel-normalised features of ``net`` (LPIPS without learned weights)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval().requires_grad_(False)

    def __call__(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _follow_input(self.net, recon)
        recon_feats, target_feats = self.net(recon), self.net(target.detach())
        if isinstance(recon_feats, torch.Tensor):
            recon_feats, target_feats = [recon_feats], [target_feats]
        total = recon.new_zeros((), dtype=torch.float32)
        for r, t in zip(recon_feats, target_feats):
            r, t = r.float(), t.float()
            r = r / (r.norm(dim=1, keepdim=True) + 1e-6)
            t = t / (t.norm(dim=1, keepdim=True) + 1e-6)
            total = total + (r - t).pow(2).sum(dim=1).mean()
        return total


class LPIPSDistance:
    """LPIPS(VGG16) from the optional ``lpips`` package, built on first use (that is when VGG downloads)."""

    def __init__(self) -> None:
        self.net: nn.Module | None = None

    def __call__(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            import lpips  # optional extra, checked at construction

            try:
                self.net = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)
            except Exception as error:  # the VGG16 weights come from the network on first use
                raise RuntimeError(
                    "perceptual='lpips' could not build LPIPS(VGG16): the VGG16 weights are downloaded by "
                    "torchvision on first use. Make them available offline, or use perceptual='random', "
                    f"perceptual=None or your own nn.Module. Cause: {error!r}") from error
        _follow_input(self.net, recon)
        return self.net(recon.float(), target.detach().float()).mean()


def build_perceptual(perceptual: object, channels: int) -> tuple[PerceptualFn | None, str]:
    """Resolve the ``perceptual`` argument into a loss function (or None) and a short name of the choice."""
    global _warned_auto
    if isinstance(perceptual, nn.Module):
        return FeatureDistance(perceptual), "custom"
    if perceptual is None:
        return None, "none"
    if not isinstance(perceptual, str) or perceptual not in PERCEPTUAL_CHOICES:
        raise TypeError(f"perceptual must be one of {PERCEPTUAL_CHOICES} or an nn.Module, got {perceptual!r}")
    if perceptual == "random":
        return FeatureDistance(RandomFeatureNet(channels=channels)), "random"
    if perceptual == "auto" and not lpips_available():
        if not _warned_auto:
            warnings.warn("VQGanVAE(perceptual='auto'): the optional 'lpips' package is not installed, so the VAE "
                          "trains without a perceptual loss; pass perceptual='random' for a download-free stand-in "
                          "or perceptual=None to silence this", stacklevel=3)
            _warned_auto = True
        return None, "none"
    if not lpips_available():
        raise ImportError("perceptual='lpips' needs the optional 'lpips' package (pip install lpips; it pulls "
                          "torchvision and downloads VGG16 weights on first use). Without it use "
                          "perceptual='random', perceptual=None or pass your own feature nn.Module")
    if channels != 3:
        raise ValueError(f"perceptual='lpips' works on 3-channel images, but channels={channels}; "
                         "use perceptual='random', None or your own nn.Module")
    return LPIPSDistance(), "lpips"

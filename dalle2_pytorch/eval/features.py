"""Feature extractors for the distribution metrics (FID, KID): any ``nn.Module`` mapping images to vectors.

FID and KID compare two sets of images through the statistics of a network's features.  Published numbers use
Inception-v3 (:class:`InceptionFeatures`, needs ``torch-fidelity`` and its weights).  Everything else here runs
with no download, so tests and the toy pipeline can track quality anywhere:

* :class:`RandomConvFeatures`: a small convolutional network with fixed random weights (seeded); random conv
  features are a known, cheap stand-in for a trained network when comparing image sets of the same domain;
* :class:`ClipImageFeatures`: the image embeddings of any CLIP adapter (e.g. our own CLIP trained on the data).

Every extractor takes images ``(batch, 3, height, width)`` as floats in [0, 1] and has an int ``num_features``.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable, Union

import torch
import torch.nn.functional as F
from torch import nn

Images = Union[torch.Tensor, Iterable[torch.Tensor]]


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Raise a clear ValueError unless ``images`` is a float (batch, 3, h, w) tensor; return it as float32."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, 3, height, width), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (batch, 3, height, width), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floats in [0, 1], got dtype {images.dtype}")
    return images.float()


class RandomConvFeatures(nn.Module):
    """Seeded random-weight conv net: images in [0, 1] -> ``num_features`` vectors (no training, no download).

    Images are resized to ``image_size``, mapped to [-1, 1] and passed through ``depth`` stride-2 conv + GELU
    layers of width ``width``; the last feature map is pooled by its mean and its max over positions (colour and
    "is there a shape here" statistics) and projected to ``num_features``.  The same ``seed`` always gives the
    same network, so numbers from different runs are comparable.
    """

    def __init__(self, *, num_features: int = 64, width: int = 32, depth: int = 3, image_size: int = 32,
                 seed: int = 0) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("width", width), ("depth", depth),
                            ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_features, self.image_size = num_features, image_size
        generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        channels = 3
        for _ in range(depth):
            conv = nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1)
            with torch.no_grad():  # He-style scale so activations neither vanish nor explode with depth
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / (channels * 9)) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
            layers += [conv, nn.GELU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(2 * width, num_features)
        with torch.no_grad():
            self.project.weight.copy_(torch.randn(self.project.weight.shape, generator=generator) / (2 * width) ** 0.5)
            self.project.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        maps = self.body(images * 2 - 1).flatten(2)
        return self.project(torch.cat([maps.mean(-1), maps.amax(-1)], dim=-1))


class ClipImageFeatures(nn.Module):
    """Image embeddings of a CLIP adapter (anything with ``embed_image`` and ``dim_latent``) as FID/KID features."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        from dalle2_pytorch.clip.adapters import to_clip_adapter

        adapter = to_clip_adapter(clip)
        if adapter is None:
            raise ValueError("clip must be a CLIP model or adapter, got None")
        self.adapter = adapter
        self.num_features = int(adapter.dim_latent)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adapter.embed_image(check_images(images)).image_embed


class InceptionFeatures(nn.Module):
    """The standard FID/KID/IS network: torch-fidelity's Inception-v3 port of the TF FID graph, via torchmetrics.

    ``feature``: 2048 (pool features; FID and KID), 768, 192, 64, or ``"logits_unbiased"`` (1008 class logits; the
    Inception Score).  Images in [0, 1] of any size are turned into uint8 and resized to 299 x 299 inside the
    network: ``antialias=False`` (default) with the TF1-compatible bilinear resize of the original FID code and
    torch-fidelity, for numbers comparable with papers; ``antialias=True`` with torchmetrics' default antialiased
    resize.  Needs ``pip install torch-fidelity``; the weights (``pt_inception-2015-12-05``) are downloaded by
    torch-fidelity on first use, or read from ``weights_path``.
    """

    FEATURES = (64, 192, 768, 2048, "logits_unbiased")

    def __init__(self, feature: int | str = 2048, *, weights_path: str | None = None, antialias: bool = False) -> None:
        super().__init__()
        if feature not in self.FEATURES:
            raise ValueError(f"feature must be one of {self.FEATURES}, got {feature!r}")
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ImportError("InceptionFeatures needs torch-fidelity (pip install torch-fidelity); or pass a "
                              "feature_extractor of your own, e.g. RandomConvFeatures() or ClipImageFeatures(clip)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.network = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                          feature_extractor_weights_path=weights_path, antialias=antialias)
        self.num_features = 1008 if feature == "logits_unbiased" else int(feature)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((check_images(images).clamp(0, 1) * 255).to(torch.uint8))


class PrecomputedFeatures(nn.Module):
    """Identity with a ``num_features``: lets torchmetrics' metrics consume features extracted once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def iterate_batches(images: Images, batch_size: int, name: str = "images") -> Iterable[torch.Tensor]:
    """Yield float batches from one tensor (cut into ``batch_size`` rows) or from an iterable of batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(images, torch.Tensor):
        images = check_images(images, name)
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size]
    else:
        for batch in images:
            yield check_images(batch, name)


@torch.no_grad()
def extract_features(images: Images, feature_extractor: nn.Module, *, batch_size: int = 256,
                     name: str = "images") -> torch.Tensor:
    """(N, num_features) float64 features of all ``images`` (a tensor or an iterable of batches), in order."""
    if not isinstance(feature_extractor, nn.Module):
        raise TypeError(f"feature_extractor must be an nn.Module mapping images to vectors, got "
                        f"{type(feature_extractor).__name__}")
    device = next((p.device for p in feature_extractor.parameters()), torch.device("cpu"))
    chunks = [feature_extractor(batch.to(device)).double().flatten(1).cpu()
              for batch in iterate_batches(images, batch_size, name)]
    if not chunks:
        raise ValueError(f"{name} is empty")
    return torch.cat(chunks)

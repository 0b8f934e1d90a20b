"""Image-set metrics through torchmetrics: FID, KID and Inception Score with an injectable feature extractor.

Features are extracted once (by :func:`~dalle2_pytorch.eval.features.extract_features`) and handed to
torchmetrics' own ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` / ``InceptionScore`` through an
identity module, so the maths is torchmetrics' and the network is whatever the caller chose:

* ``feature_extractor=InceptionFeatures(2048)``: the published-number setting (torch-fidelity's Inception-v3,
  uint8 images resized to 299 px inside the network), with at least 10k generated images against 10k+ real
  ones (FID is biased upwards at small sample counts, so only compare numbers taken at the same count);
* ``feature_extractor=RandomConvFeatures()`` or ``ClipImageFeatures(clip)``: no download, for tests and toy runs.

Images are float tensors (batch, 3, height, width) in [0, 1], or iterables of such batches.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from dalle2_pytorch.eval.features import Images, PrecomputedFeatures, extract_features


def _check_features(features: torch.Tensor, name: str, minimum: int) -> None:
    if features.shape[0] < minimum:
        raise ValueError(f"{name} holds {features.shape[0]} images; this metric needs at least {minimum}")


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets (torchmetrics' FID maths)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_features(real, "real", 2)
    _check_features(fake, "fake", 2)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                      subset_size: Optional[int] = None, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over ``subsets`` random subsets (torchmetrics' KID).

    ``subset_size`` defaults to min(1000, half the smaller set) so that subsets differ and the std means something;
    the subsets are drawn with ``seed`` (reproducible).
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_features(real, "real", 2)
    _check_features(fake, "fake", 2)
    largest = min(real.shape[0], fake.shape[0])
    size = max(2, min(1000, largest // 2)) if subset_size is None else subset_size
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= largest:
        raise ValueError(f"subset_size must be an integer in [2, {largest}] (the smaller set's size), got {size!r}")
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    with warnings.catch_warnings():  # torchmetrics warns that KID keeps all features: ours are already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score_from_logits(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E_x KL(p(y|x) || p(y))) from class logits (torchmetrics' IS)."""
    from torchmetrics.image.inception import InceptionScore

    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    _check_features(logits, "images", splits)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # (feature-buffer and 1-split std warnings)
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=PrecomputedFeatures(logits.shape[1]), splits=splits)
        metric.update(logits.double())
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def frechet_distance(real: Images, fake: Images, *, feature_extractor: nn.Module, batch_size: int = 256) -> float:
    """FID between two image sets in the feature space of ``feature_extractor`` (lower is better; 0 = same)."""
    return fid_from_features(extract_features(real, feature_extractor, batch_size=batch_size, name="real"),
                             extract_features(fake, feature_extractor, batch_size=batch_size, name="fake"))


def kernel_distance(real: Images, fake: Images, *, feature_extractor: nn.Module, subsets: int = 100,
                    subset_size: Optional[int] = None, batch_size: int = 256, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) between two image sets; unbiased, so it is ~0 (and may be < 0) for matching sets."""
    return kid_from_features(extract_features(real, feature_extractor, batch_size=batch_size, name="real"),
                             extract_features(fake, feature_extractor, batch_size=batch_size, name="fake"),
                             subsets=subsets, subset_size=subset_size, seed=seed)


def inception_score(images: Images, *, classifier: nn.Module, splits: int = 10, batch_size: int = 256,
                    seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std): ``classifier`` maps images to class logits, e.g.
    ``InceptionFeatures("logits_unbiased")``; higher means confident and diverse predictions (at most #classes)."""
    return inception_score_from_logits(extract_features(images, classifier, batch_size=batch_size),
                                       splits=splits, seed=seed)


def image_quality(real: Images, fake: Images, *, feature_extractor: nn.Module, kid_subsets: int = 100,
                  kid_subset_size: Optional[int] = None, batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """FID and KID from one feature pass over each set: ``{"fid", "kid_mean", "kid_std"}``."""
    real_features = extract_features(real, feature_extractor, batch_size=batch_size, name="real")
    fake_features = extract_features(fake, feature_extractor, batch_size=batch_size, name="fake")
    kid_mean, kid_std = kid_from_features(real_features, fake_features, subsets=kid_subsets,
                                          subset_size=kid_subset_size, seed=seed)
    return {"fid": fid_from_features(real_features, fake_features), "kid_mean": kid_mean, "kid_std": kid_std}

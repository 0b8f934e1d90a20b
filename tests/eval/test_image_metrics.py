"""FID / KID / IS on known inputs: identical sets score ~0, shifted sets more, monotone in the shift."""

import importlib.util

import pytest
import torch

from dalle2_pytorch.data import ToyShapesDataset
from dalle2_pytorch.eval import (InceptionFeatures, RandomConvFeatures, extract_features, fid_from_features,
                                 frechet_distance, image_quality, inception_score, kernel_distance)


@pytest.fixture(scope="module")
def toy_sets():
    real, _, _ = ToyShapesDataset(num_samples=192, image_size=16, seed=0).render_range()
    other, _, _ = ToyShapesDataset(num_samples=192, image_size=16, seed=1).render_range()
    return real, other


@pytest.fixture(scope="module")
def features():
    return RandomConvFeatures(num_features=16, image_size=16, seed=0)


def test_identical_sets_have_zero_fid_and_kid(toy_sets, features):
    real, _ = toy_sets
    scores = image_quality(real, real, feature_extractor=features, kid_subsets=5)
    assert abs(scores["fid"]) < 1e-4
    assert abs(scores["kid_mean"]) < 5e-3


def test_fid_and_kid_grow_monotonically_with_a_shift(toy_sets, features):
    real, other = toy_sets
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(other.shape, generator=generator)
    fids, kids = [], []
    for strength in (0.0, 0.1, 0.2, 0.4):
        shifted = (other + strength * noise).clamp(0, 1)
        scores = image_quality(real, shifted, feature_extractor=features, kid_subsets=5, seed=0)
        fids.append(scores["fid"])
        kids.append(scores["kid_mean"])
    assert fids == sorted(fids) and fids[-1] > 10 * max(fids[0], 1e-3), fids
    assert kids == sorted(kids) and kids[-1] > kids[0] + 0.01, kids


def test_streaming_batches_give_the_same_fid_as_one_tensor(toy_sets, features):
    real, other = toy_sets
    whole = frechet_distance(real, other, feature_extractor=features)
    batched = frechet_distance(list(real.split(50)), other, feature_extractor=features, batch_size=7)
    assert whole == pytest.approx(batched, rel=1e-6, abs=1e-9)


def test_kid_is_reproducible_by_seed(toy_sets, features):
    real, other = toy_sets
    first = kernel_distance(real, other, feature_extractor=features, subsets=4, subset_size=50, seed=3)
    again = kernel_distance(real, other, feature_extractor=features, subsets=4, subset_size=50, seed=3)
    assert first == again


class ColourClassifier(torch.nn.Module):
    """'Logits' that are confident one-hots over which channel is brightest."""

    def forward(self, images):
        return images.mean(dim=(2, 3)) * 100.0


def test_inception_score_counts_confident_balanced_classes():
    images = torch.zeros(30, 3, 8, 8)
    for i in range(30):
        images[i, i % 3] = 1.0
    mean, _ = inception_score(images, classifier=ColourClassifier(), splits=1)
    assert mean == pytest.approx(3.0, rel=1e-3)
    single, _ = inception_score(torch.zeros(30, 3, 8, 8).index_fill_(1, torch.tensor([0]), 1.0),
                                classifier=ColourClassifier(), splits=1)
    assert single == pytest.approx(1.0, rel=1e-3)


def test_random_conv_features_are_deterministic_by_seed(toy_sets):
    real, _ = toy_sets
    a = extract_features(real[:8], RandomConvFeatures(seed=1))
    b = extract_features(real[:8], RandomConvFeatures(seed=1))
    c = extract_features(real[:8], RandomConvFeatures(seed=2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == (8, 64)


def test_bad_inputs_raise_clear_errors(toy_sets, features):
    real, _ = toy_sets
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(real[:, :1], real, feature_extractor=features)
    with pytest.raises(ValueError, match="floats"):
        frechet_distance((real * 255).byte(), real, feature_extractor=features)
    with pytest.raises(TypeError, match="feature_extractor"):
        frechet_distance(real, real, feature_extractor="inception")
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(real[:10], real[:10], feature_extractor=features, subset_size=11)
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(torch.zeros(1, 4, dtype=torch.float64), torch.zeros(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_features"):
        RandomConvFeatures(num_features=0)


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_inception_path_explains_the_missing_package():
    with pytest.raises(ImportError, match="torch-fidelity"):
        InceptionFeatures(2048)
    with pytest.raises(ValueError, match="feature"):
        InceptionFeatures(1000)

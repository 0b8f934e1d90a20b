"""Prior cosine metrics: known values on constructed embeddings, and evaluate_prior on real priors."""

import math

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.eval import evaluate_prior, prior_cosine_metrics
from dalle2_pytorch.prior import DiffusionPrior, DiffusionPriorNetwork, LinearPrior


def constructed(angle: float):
    """Row k: text e_k, image cos(a) e_k + sin(a) e_{k+3}; rows use disjoint axes, so unrelated pairs are orthogonal."""
    eye = torch.eye(6)
    text = eye[:3]
    image = math.cos(angle) * eye[:3] + math.sin(angle) * eye[3:]
    return text, image


def test_perfect_prediction_gives_the_known_values():
    text, image = constructed(math.pi / 3)
    metrics = prior_cosine_metrics(image.clone(), text, image)
    assert metrics["baseline_similarity"] == pytest.approx(0.5)
    assert metrics["similarity_with_text"] == pytest.approx(0.5)
    assert metrics["difference_from_baseline"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["similarity_with_image"] == pytest.approx(1.0)
    assert metrics["similarity_with_unrelated_caption"] == pytest.approx(0.0, abs=1e-6)


def test_copying_the_text_embedding_is_visible_as_a_gap_to_the_baseline():
    text, image = constructed(math.pi / 3)
    metrics = prior_cosine_metrics(text * 3.0, text, image)  # scale does not matter to cosines
    assert metrics["similarity_with_text"] == pytest.approx(1.0)
    assert metrics["difference_from_baseline"] == pytest.approx(0.5)
    assert metrics["similarity_with_image"] == pytest.approx(0.5)


def test_constructed_metrics_reject_mismatched_shapes():
    text, image = constructed(0.3)
    with pytest.raises(ValueError, match="same shape"):
        prior_cosine_metrics(image[:2], text, image)
    with pytest.raises(ValueError, match="at least 2"):
        prior_cosine_metrics(image[:1], text[:1], image[:1])


def linear_pairs(n: int, dim: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.eye(dim) + 0.4 * torch.randn(dim, dim, generator=torch.Generator().manual_seed(100))  # baseline ~0.8
    text = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return text, F.normalize(text @ mixing, dim=-1)


def test_trained_linear_prior_predicts_the_image_embedding():
    torch.manual_seed(0)
    prior = LinearPrior(image_embed_dim=16)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for step in range(300):
        text, image = linear_pairs(64, 16, seed=step)
        loss = prior(text_embed=text, image_embed=image)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    text, image = linear_pairs(128, 16, seed=10_000)
    metrics = evaluate_prior(prior, image, text_embed=text)
    assert metrics["similarity_with_image"] > 0.95
    assert abs(metrics["difference_from_baseline"]) < 0.1
    assert metrics["baseline_similarity"] > 0.6
    assert abs(metrics["similarity_with_unrelated_caption"]) < 0.15


def test_untrained_linear_prior_does_not_pass():
    torch.manual_seed(0)
    text, image = linear_pairs(128, 16, seed=10_000)
    assert evaluate_prior(LinearPrior(image_embed_dim=16), image, text_embed=text)["similarity_with_image"] < 0.5


def test_evaluate_prior_runs_a_diffusion_prior_with_its_sampler_options():
    torch.manual_seed(0)
    net = DiffusionPriorNetwork(16, depth=1, dim_head=8, heads=2)
    prior = DiffusionPrior(net, image_embed_dim=16, timesteps=20, condition_on_text_encodings=False)
    text, image = linear_pairs(6, 16, seed=1)
    metrics = evaluate_prior(prior, image, text_embed=text, timesteps=4, sampler="ddim",
                             generator=torch.Generator().manual_seed(0))
    assert set(metrics) == {"baseline_similarity", "similarity_with_text", "difference_from_baseline",
                            "similarity_with_image", "similarity_with_unrelated_caption"}
    assert all(math.isfinite(value) for value in metrics.values())
    again = evaluate_prior(prior, image, text_embed=text, timesteps=4, sampler="ddim",
                           generator=torch.Generator().manual_seed(0))
    assert again == metrics


def test_evaluate_prior_argument_errors():
    prior = LinearPrior(image_embed_dim=16)
    text, image = linear_pairs(4, 16, seed=1)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_prior(prior, image)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_prior(prior, image, text_embed=text, text=torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="clip"):
        evaluate_prior(prior, image, text=torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="prior"):
        evaluate_prior(object(), image, text_embed=text)

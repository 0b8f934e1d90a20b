"""Evaluation: image-set metrics (FID, KID, IS via torchmetrics), CLIP score, prior cosine metrics, toy faithfulness.

``run_evaluation`` (in :mod:`dalle2_pytorch.eval.run`, behind ``dalle2 eval``) scores a saved toy pipeline; it is
imported lazily so that ``import dalle2_pytorch.eval`` stays light.
"""

from dalle2_pytorch.eval.clip_score import clip_score, clip_similarities
from dalle2_pytorch.eval.features import (ClipImageFeatures, InceptionFeatures, PrecomputedFeatures,
                                          RandomConvFeatures, extract_features)
from dalle2_pytorch.eval.image_metrics import (fid_from_features, frechet_distance, image_quality, inception_score,
                                               inception_score_from_logits, kernel_distance, kid_from_features)
from dalle2_pytorch.eval.prior_metrics import evaluate_prior, prior_cosine_metrics
from dalle2_pytorch.eval.toy_metrics import toy_faithfulness

__all__ = [
    "RandomConvFeatures", "ClipImageFeatures", "InceptionFeatures", "PrecomputedFeatures", "extract_features",
    "frechet_distance", "kernel_distance", "inception_score", "image_quality",
    "fid_from_features", "kid_from_features", "inception_score_from_logits",
    "clip_score", "clip_similarities", "evaluate_prior", "prior_cosine_metrics", "toy_faithfulness",
    "run_evaluation",
]


def __getattr__(name: str):
    if name == "run_evaluation":
        from dalle2_pytorch.eval.run import run_evaluation

        return run_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

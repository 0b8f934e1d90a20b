"""The diffusion prior: CLIP text embedding -> CLIP image embedding (DALL-E 2, section 2.2)."""

from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.linear_prior import LinearPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork

__all__ = ["DiffusionPrior", "DiffusionPriorNetwork", "LinearPrior"]

"""LinearPrior: a regression baseline mapping a text embedding straight to an image embedding.

The Kandinsky 2.x authors compared the diffusion prior with a plain learned (linear) map from
the CLIP text embedding to the CLIP image embedding.  This class is that baseline, with the same
``forward`` (→ loss) and ``sample`` (→ embeddings) interface as :class:`DiffusionPrior`, so the
two can be trained and evaluated by the same code.  ``hidden_dim`` turns the map into a
one-hidden-layer MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dalle2_pytorch.diffusion import diffusion_loss
from dalle2_pytorch.diffusion.losses import check_loss_type
from dalle2_pytorch.clip.conditioning import FrozenClipMixin, frozen_clip_adapter, resolve_embed_dim
from dalle2_pytorch.prior.conditioning import embed_image, embed_text
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config


class LinearPrior(FrozenClipMixin, PretrainedMixin, nn.Module):
    """Deterministic text embed → image embed regression.

    Args:
        clip: optional frozen CLIP/adapter embedding raw ``text``/``image`` inputs.
        image_embed_dim: embedding width (required without ``clip``).
        hidden_dim: None for a linear map; an int for Linear → GELU → Linear of that width.
        loss_type: ``'l1'``, ``'l2'`` or ``'huber'``, on embeddings scaled by ``image_embed_scale``.
        image_embed_scale: scale of the regression target (default √dim, as in :class:`DiffusionPrior`,
            so the two losses are on the same footing).
    """

    @register_to_config
    def __init__(self, *, clip: Any = None, image_embed_dim: int | None = None, hidden_dim: int | None = None,
                 loss_type: str = "l2", image_embed_scale: float | None = None) -> None:
        super().__init__()
        self.clip = frozen_clip_adapter(clip)
        self.image_embed_dim = dim = resolve_embed_dim(self.clip, image_embed_dim)
        self.loss_type = check_loss_type(loss_type)
        bad_hidden = isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1
        if hidden_dim is not None and bad_hidden:
            raise ValueError(f"hidden_dim must be None or a positive integer, got {hidden_dim!r}")
        if image_embed_scale is not None and not image_embed_scale > 0:
            raise ValueError(f"image_embed_scale must be > 0, got {image_embed_scale!r}")
        self.image_embed_scale = float(image_embed_scale) if image_embed_scale is not None else dim ** 0.5
        if hidden_dim is None:
            self.map = nn.Linear(dim, dim)
        else:
            self.map = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def predict(self, text_embed: torch.Tensor) -> torch.Tensor:
        """Image embedding in diffusion scale (× ``image_embed_scale``)."""
        return self.map(text_embed)

    def forward(self, text: torch.Tensor | None = None, image: torch.Tensor | None = None,
                text_embed: torch.Tensor | None = None, image_embed: torch.Tensor | None = None,
                text_encodings: torch.Tensor | None = None) -> torch.Tensor:
        """Regression loss; ``text_encodings`` are accepted for interface parity and not used."""
        text_embed, _ = embed_text(self.clip, text=text, text_embed=text_embed, text_encodings=text_encodings,
                                   dim=self.image_embed_dim, need_encodings=False)
        image_embed = embed_image(self.clip, image=image, image_embed=image_embed, dim=self.image_embed_dim)
        if image_embed.shape[0] != text_embed.shape[0]:
            raise ValueError(f"got {text_embed.shape[0]} texts but {image_embed.shape[0]} images")
        return diffusion_loss(self.predict(text_embed), image_embed * self.image_embed_scale, self.loss_type)

    @torch.no_grad()
    def sample(self, text: torch.Tensor | None = None, num_samples_per_batch: int = 1, cond_scale: float = 1.0,
               timesteps: int | None = None, *, sampler: str | None = None, text_embed: torch.Tensor | None = None,
               text_encodings: torch.Tensor | None = None, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Image embeddings (b, dim) in CLIP scale.

        The map is deterministic: there is one candidate per text and no noise, so the diffusion
        options (``num_samples_per_batch``, ``cond_scale``, ``timesteps``, ``sampler``, ``eta``,
        ``generator``) are accepted only so that code written for :class:`DiffusionPrior` runs
        unchanged, and do not change the result.
        """
        text_embed, _ = embed_text(self.clip, text=text, text_embed=text_embed, text_encodings=text_encodings,
                                   dim=self.image_embed_dim, need_encodings=False)
        was_training = self.training
        self.eval()
        try:
            return self.predict(text_embed) / self.image_embed_scale
        finally:
            self.train(was_training)

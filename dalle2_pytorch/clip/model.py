"""A trainable CLIP with the constructor keywords of x-clip (which the seed README uses).

Text transformer (token ids, 0 is padding) and ViT image encoder, each with a CLS token, projected
to ``dim_latent`` and l2-normalised; similarities are scaled by a learned temperature (CLIP's
``logit_scale``, initialised to 1/0.07 and capped at 100). Options, each doing what its name says:

* ``use_all_token_embeds``: FILIP token-wise similarity instead of CLS-to-CLS (see ``losses.py``);
* ``decoupled_contrastive_learning``: the DCL loss, positives left out of the denominator;
* ``extra_latent_projection``: a second pair of projections used for the image->text direction
  (CLOOB-style), the first pair serves text->image and the embeddings;
* ``use_mlm`` with ``text_ssl_loss_weight``: masked language modelling on the text tower (DeCLIP);
* ``use_visual_ssl`` with ``visual_ssl_type`` ('simclr' | 'simsiam') and ``image_ssl_loss_weight``:
  image self-supervision on two torch-made augmentations (SLIP / DeCLIP);
* ``visual_patch_dropout``: the share of patches dropped while training (FLIP); none at eval.

With self-supervision on, the loss is ``(1 - w_text - w_image) * contrastive + w_text * mlm + w_image * ssl``
where a weight counts only when its option is on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.clip.encoders import TEXT_PAD_ID, TextEncoder, VisionEncoder
from dalle2_pytorch.clip.losses import contrastive_loss, filip_similarity
from dalle2_pytorch.clip.mlm import MaskedLanguageModel
from dalle2_pytorch.clip.outputs import EmbeddedImage, EmbeddedText
from dalle2_pytorch.clip.visual_ssl import VISUAL_SSL_TYPES, VisualSelfSupervision
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config
from dalle2_pytorch.validation import strict_keywords

MAX_LOGIT_SCALE = 100.0


def _check_positive_ints(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class CLIP(PretrainedMixin, nn.Module):
    """Contrastive text-image model; ``clip(text, image, return_loss=True)`` gives the training loss."""

    @strict_keywords()
    @register_to_config
    def __init__(
        self,
        *,
        dim_text: int = 512,
        dim_image: int = 512,
        dim_latent: int = 512,
        num_text_tokens: int = 10000,
        text_enc_depth: int = 6,
        text_seq_len: int = 256,
        text_heads: int = 8,
        text_dim_head: int = 64,
        visual_enc_depth: int = 6,
        visual_heads: int = 8,
        visual_dim_head: int = 64,
        visual_image_size: int = 256,
        visual_patch_size: int = 32,
        visual_patch_dropout: float = 0.5,
        channels: int = 3,
        use_all_token_embeds: bool = False,
        decoupled_contrastive_learning: bool = False,
        extra_latent_projection: bool = False,
        use_mlm: bool = False,
        text_ssl_loss_weight: float = 0.05,
        use_visual_ssl: bool = False,
        visual_ssl_type: str = "simsiam",
        image_ssl_loss_weight: float = 0.05,
    ) -> None:
        super().__init__()
        _check_positive_ints(dim_text=dim_text, dim_image=dim_image, dim_latent=dim_latent,
                             num_text_tokens=num_text_tokens, text_enc_depth=text_enc_depth, text_seq_len=text_seq_len,
                             text_heads=text_heads, text_dim_head=text_dim_head, visual_enc_depth=visual_enc_depth,
                             visual_heads=visual_heads, visual_dim_head=visual_dim_head,
                             visual_image_size=visual_image_size, visual_patch_size=visual_patch_size, channels=channels)
        if visual_image_size % visual_patch_size:
            raise ValueError(f"visual_image_size ({visual_image_size}) must be divisible by visual_patch_size "
                             f"({visual_patch_size})")
        if not 0 <= visual_patch_dropout < 1:
            raise ValueError(f"visual_patch_dropout must be in [0, 1), got {visual_patch_dropout!r}")
        if visual_ssl_type not in VISUAL_SSL_TYPES:
            raise ValueError(f"visual_ssl_type must be one of {VISUAL_SSL_TYPES}, got {visual_ssl_type!r}")
        for name, weight in (("text_ssl_loss_weight", text_ssl_loss_weight), ("image_ssl_loss_weight", image_ssl_loss_weight)):
            if not 0 <= weight < 1:
                raise ValueError(f"{name} must be in [0, 1), got {weight!r}")
        self.text_ssl_loss_weight = text_ssl_loss_weight if use_mlm else 0.0
        self.image_ssl_loss_weight = image_ssl_loss_weight if use_visual_ssl else 0.0
        if self.text_ssl_loss_weight + self.image_ssl_loss_weight >= 1:
            raise ValueError("text_ssl_loss_weight + image_ssl_loss_weight must be below 1 (the rest weighs the "
                             f"contrastive loss), got {self.text_ssl_loss_weight} + {self.image_ssl_loss_weight}")

        self.dim_text, self.dim_image, self.dim_latent = dim_text, dim_image, dim_latent
        self.num_text_tokens, self.text_seq_len = num_text_tokens, text_seq_len
        self.image_size, self.channels = visual_image_size, channels
        self.use_all_token_embeds = use_all_token_embeds
        self.decoupled_contrastive_learning = decoupled_contrastive_learning
        self.extra_latent_projection = extra_latent_projection

        self.text_encoder = TextEncoder(num_text_tokens, dim_text, text_seq_len, text_enc_depth, text_heads, text_dim_head)
        self.visual_encoder = VisionEncoder(visual_image_size, visual_patch_size, channels, dim_image,
                                            visual_enc_depth, visual_heads, visual_dim_head, visual_patch_dropout)
        self.to_text_latent = nn.Linear(dim_text, dim_latent, bias=False)
        self.to_visual_latent = nn.Linear(dim_image, dim_latent, bias=False)
        if extra_latent_projection:
            self.to_text_latent_extra = nn.Linear(dim_text, dim_latent, bias=False)
            self.to_visual_latent_extra = nn.Linear(dim_image, dim_latent, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        self.mlm = MaskedLanguageModel(dim_text, num_text_tokens) if use_mlm else None
        self.visual_ssl = VisualSelfSupervision(dim_image, visual_ssl_type) if use_visual_ssl else None

    # ------------------------------------------------------------------ input checks
    def _check_text(self, text: torch.Tensor) -> None:
        if not isinstance(text, torch.Tensor) or text.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise TypeError(f"text must be an integer tensor of token ids, got {getattr(text, 'dtype', type(text))}")
        if text.ndim != 2:
            raise ValueError(f"text must have shape (batch, seq_len), got {tuple(text.shape)}")
        if text.shape[1] > self.text_seq_len:
            raise ValueError(f"text has {text.shape[1]} tokens, more than text_seq_len={self.text_seq_len}")
        if text.numel() and (text.min() < 0 or text.max() >= self.num_text_tokens):
            bad = text.max().item() if text.max() >= self.num_text_tokens else text.min().item()
            raise ValueError(f"text holds token id {bad}, outside [0, num_text_tokens={self.num_text_tokens})")

    def _check_image(self, image: torch.Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or tuple(image.shape[1:]) != expected:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must have shape (batch, {', '.join(map(str, expected))}), got {got}")

    # ------------------------------------------------------------------ embeddings
    def _pool_text(self, encoded: torch.Tensor, mask: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        if self.use_all_token_embeds:  # FILIP trains token latents: pool them (masked mean) for one vector
            tokens = F.normalize(projection(encoded[:, 1:]), dim=-1) * mask[..., None]
            return F.normalize(tokens.sum(dim=1), dim=-1)
        return F.normalize(projection(encoded[:, 0]), dim=-1)

    def _pool_image(self, encoded: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        if self.use_all_token_embeds:
            return F.normalize(F.normalize(projection(encoded[:, 1:]), dim=-1).mean(dim=1), dim=-1)
        return F.normalize(projection(encoded[:, 0]), dim=-1)

    def embed_text(self, text: torch.Tensor) -> EmbeddedText:
        """l2-normalised text latents (b, dim_latent), per-token encodings (b, n, dim_text) with padding zeroed, mask."""
        self._check_text(text)
        mask = text != TEXT_PAD_ID
        encoded = self.text_encoder(text)
        return EmbeddedText(self._pool_text(encoded, mask, self.to_text_latent),
                            encoded[:, 1:] * mask[..., None], mask)

    def embed_image(self, image: torch.Tensor) -> EmbeddedImage:
        """l2-normalised image latents (b, dim_latent) and per-patch encodings (b, patches, dim_image)."""
        self._check_image(image)
        encoded = self.visual_encoder(image)
        return EmbeddedImage(self._pool_image(encoded, self.to_visual_latent), encoded[:, 1:])

    # ------------------------------------------------------------------ similarity and loss
    def _similarities(self, text_enc: torch.Tensor, mask: torch.Tensor,
                      image_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled (text->image (b, b), image->text (b, b)) cosine similarities."""
        text_proj, image_proj = self.to_text_latent, self.to_visual_latent
        if self.use_all_token_embeds:
            def tokens(enc: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
                return F.normalize(proj(enc[:, 1:]), dim=-1)
            t2i, i2t = filip_similarity(tokens(text_enc, text_proj), mask, tokens(image_enc, image_proj))
            if not self.extra_latent_projection:
                return t2i, i2t
            _, i2t = filip_similarity(tokens(text_enc, self.to_text_latent_extra), mask,
                                      tokens(image_enc, self.to_visual_latent_extra))
            return t2i, i2t
        t2i = self._pool_text(text_enc, mask, text_proj) @ self._pool_image(image_enc, image_proj).t()
        if not self.extra_latent_projection:
            return t2i, t2i.t()
        i2t = (self._pool_image(image_enc, self.to_visual_latent_extra)
               @ self._pool_text(text_enc, mask, self.to_text_latent_extra).t())
        return t2i, i2t

    def forward(self, text: torch.Tensor, image: torch.Tensor, return_loss: bool = False) -> torch.Tensor:
        """Scaled text->image similarity logits (b_text, b_image), or the training loss when ``return_loss``."""
        self._check_text(text)
        self._check_image(image)
        if return_loss and text.shape[0] != image.shape[0]:
            raise ValueError(f"return_loss needs as many texts as images, got {text.shape[0]} and {image.shape[0]}")
        mask = text != TEXT_PAD_ID
        text_enc, image_enc = self.text_encoder(text), self.visual_encoder(image)
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        t2i, i2t = self._similarities(text_enc, mask, image_enc)
        if not return_loss:
            return t2i * scale
        loss = contrastive_loss(t2i * scale, i2t * scale, decoupled=self.decoupled_contrastive_learning)
        loss = loss * (1 - self.text_ssl_loss_weight - self.image_ssl_loss_weight)
        if self.mlm is not None:
            loss = loss + self.text_ssl_loss_weight * self.mlm(self.text_encoder, text)
        if self.visual_ssl is not None:
            loss = loss + self.image_ssl_loss_weight * self.visual_ssl(lambda x: self.visual_encoder(x)[:, 0], image)
        return loss

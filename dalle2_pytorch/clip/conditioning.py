"""CLIP conditioning shared by the prior and the decoder: one rule for each step.

* :func:`frozen_clip_adapter` - which CLIPs a model accepts (our :class:`CLIP`, any
  :class:`BaseClipAdapter`, or any object with the adapter interface) and freezing it;
* :func:`clip_text_condition` / :func:`clip_image_embed` - embedding, with text padding zeroed once
  (all-zero encoding rows are padding to every network downstream);
* :func:`check_embedding` / :func:`check_text_encodings` / :func:`check_clip_fits` /
  :func:`resolve_embed_dim` - shape and width checks with one wording;
* :func:`null_pad_text` - learned null padding: encodings cut (with a warning) or padded to a fixed
  length, padding and dropped rows replaced by learned null tokens;
* :class:`FrozenClipMixin` - ``train()`` that keeps the model's ``clip`` (and other frozen parts) in eval mode.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dalle2_pytorch.clip.adapters import BaseClipAdapter, to_clip_adapter
from dalle2_pytorch.clip.model import CLIP

ADAPTER_INTERFACE = ("embed_text", "embed_image", "dim_latent")


def frozen_clip_adapter(clip: Any) -> Any:
    """``clip`` as a frozen adapter: None stays None, our :class:`CLIP` is wrapped in its adapter, an
    adapter (a :class:`BaseClipAdapter`, or any object with ``embed_text``, ``embed_image`` and
    ``dim_latent``) is used as it is.  Modules get ``requires_grad_(False)`` and ``eval()``."""
    if clip is None:
        return None
    adapter = to_clip_adapter(clip) if isinstance(clip, (CLIP, BaseClipAdapter)) else clip
    missing = [name for name in ADAPTER_INTERFACE if not hasattr(adapter, name)]
    if missing:
        raise TypeError(f"clip must be a dalle2_pytorch CLIP or a CLIP adapter (BaseClipAdapter, or any object with "
                        f"{', '.join(ADAPTER_INTERFACE)}); {type(clip).__name__} has no {missing[0]!r}")
    if isinstance(adapter, nn.Module):
        adapter.requires_grad_(False)
        adapter.eval()
    return adapter


@torch.no_grad()
def clip_text_condition(clip: Any, text: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """``(text_embed, text_encodings, text_mask)`` of token ids ``text``, detached; the encodings'
    padding rows (``text_mask`` False) are zeroed, so a network may tell padding by all-zero rows."""
    out = clip.embed_text(text)
    text_embed, text_encodings = out[0], out[1]
    text_mask = out[2] if len(out) > 2 else None
    if text_mask is not None:
        text_encodings = text_encodings.masked_fill(~text_mask.bool().unsqueeze(-1), 0.0)
    return text_embed.detach(), text_encodings.detach(), text_mask


@torch.no_grad()
def clip_image_embed(clip: Any, image: Tensor) -> Tensor:
    """CLIP image embedding (b, dim_latent) of ``image`` (in the adapter's [0, 1] range), detached."""
    return clip.embed_image(image)[0].detach()


def check_embedding(name: str, embed: Tensor, dim: int, batch: Optional[int] = None) -> Tensor:
    """``embed`` if it has shape (batch, dim) (any batch when ``batch`` is None), else a ValueError."""
    if embed.ndim != 2 or embed.shape[1] != dim or (batch is not None and embed.shape[0] != batch):
        raise ValueError(f"{name} must have shape ({'batch' if batch is None else batch}, {dim}), "
                         f"got {tuple(embed.shape)}")
    return embed


def check_text_encodings(text_encodings: Tensor, dim: int, batch: int, hint: str = "") -> Tensor:
    """``text_encodings`` if it has shape (batch, length, dim), else a ValueError (``hint`` appended)."""
    if text_encodings.ndim != 3 or text_encodings.shape[0] != batch or text_encodings.shape[2] != dim:
        raise ValueError(f"text_encodings must have shape ({batch}, length, {dim}), got "
                         f"{tuple(text_encodings.shape)}{hint}")
    return text_encodings


def check_clip_fits(clip: Any, who: str, *, image_embed_dim: Optional[int] = None,
                    text_embed_dim: Optional[int] = None, channels: Optional[int] = None) -> None:
    """A ValueError naming ``who`` (e.g. ``"unet 2"``) when its widths disagree with the CLIP's
    ``dim_latent``, ``dim_text_encodings`` or ``image_channels``; widths that either side does not
    give (None, or an adapter without that property) are not compared."""
    for name, ours, theirs in (("image_embed_dim", image_embed_dim, "dim_latent"),
                               ("text_embed_dim", text_embed_dim, "dim_text_encodings"),
                               ("channels", channels, "image_channels")):
        value = getattr(clip, theirs, None)
        if ours is not None and value is not None and ours != value:
            raise ValueError(f"{who} has {name}={ours} but the CLIP has {theirs}={value}")


def resolve_embed_dim(clip: Any, image_embed_dim: Optional[int]) -> int:
    """The embedding width: ``image_embed_dim`` or the CLIP's ``dim_latent`` (which must agree)."""
    if clip is None and image_embed_dim is None:
        raise ValueError("image_embed_dim is required when no clip is given")
    if clip is not None and image_embed_dim is not None and image_embed_dim != clip.dim_latent:
        raise ValueError(f"image_embed_dim={image_embed_dim} differs from the clip's dim_latent={clip.dim_latent}")
    return int(image_embed_dim if image_embed_dim is not None else clip.dim_latent)


def null_pad_text(tokens: Tensor, null_tokens: Tensor, max_len: int, *, mask: Optional[Tensor] = None,
                  keep: Optional[Tensor] = None) -> Tensor:
    """Text tokens (b, n, d) as exactly ``max_len`` slots with learned null padding (DALL-E 1's idea).

    Longer sequences are cut to ``max_len`` with a warning (text the model cannot see is lost);
    shorter ones are padded.  Padding positions (``mask`` False; by default the all-zero rows of
    ``tokens``), padded slots and rows with ``keep`` False (condition dropped for classifier-free
    guidance) take ``null_tokens`` ((max_len, d) or (1, max_len, d)).  Pass ``mask`` when
    ``tokens`` were projected (padding rows are no longer zero).
    """
    length = tokens.shape[1]
    if mask is None:
        mask = (tokens != 0).any(dim=-1)
    if length > max_len:
        warnings.warn(f"text encodings have {length} tokens but max_text_len is {max_len}; truncating to the "
                      f"first {max_len} (build the model with a larger max_text_len to keep them)", stacklevel=3)
        tokens, mask = tokens[:, :max_len], mask[:, :max_len]
    elif length < max_len:
        tokens = nn.functional.pad(tokens, (0, 0, 0, max_len - length))
        mask = nn.functional.pad(mask.bool(), (0, max_len - length), value=False)
    present = mask.bool()
    if keep is not None:
        present = present & keep[:, None]
    return torch.where(present[..., None], tokens, null_tokens.to(tokens.dtype))


class FrozenClipMixin:
    """For models holding a frozen CLIP as ``self.clip`` (None allowed): ``train()`` switches the
    model but leaves the CLIP in eval mode (no dropout, no batch-norm updates).  A model with more
    frozen parts names them in ``frozen_submodules`` (e.g. ``("clip", "vaes")``).  List the mixin
    before ``nn.Module`` among the bases."""

    frozen_submodules: tuple[str, ...] = ("clip",)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_submodules:
            module = getattr(self, name, None)
            if isinstance(module, nn.Module):
                module.eval()
        return self

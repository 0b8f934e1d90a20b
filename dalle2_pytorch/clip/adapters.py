"""Adapters: the one CLIP interface that the diffusion prior and the decoder consume.

An adapter wraps a CLIP, freezes it (no gradients, always in eval mode) and exposes

* ``dim_latent``, ``image_size``, ``image_channels``, ``max_text_len`` (and ``dim_text_encodings``);
* ``embed_text(tokens) -> EmbeddedText(text_embed, text_encodings, text_mask)``: tokens longer than
  ``max_text_len`` are cut to it (as the reference did, so 256-token batches work with 77-token CLIPs);
* ``embed_image(images) -> EmbeddedImage(image_embed, image_encodings)``: images in [0, 1] of any size are
  centre-cropped to a square if needed, resized (antialiased bicubic) to ``image_size`` and normalised
  the way the wrapped model expects.

To plug in a CLIP of your own, subclass :class:`BaseClipAdapter` and implement the four properties and
``_embed_text`` / ``_embed_image`` (which receive truncated tokens and resized, normalised images).
Pretrained-model packages are optional extras imported only when an adapter loads by name.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.openai_weights import is_openai_layout, openai_state_to_hf
from dalle2_pytorch.clip.outputs import EmbeddedImage, EmbeddedText
from dalle2_pytorch.clip.pretrained import hf_clip, is_hf_clip, open_clip, openai_clip
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.init_config import register_to_config
from dalle2_pytorch.serialization import PretrainedMixin
from dalle2_pytorch.validation import strict_keywords

OPENAI_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_EOT_ID = VOCAB_SIZE - 1  # 49407, the id of <|endoftext|> in OpenAI's vocabulary


def resize_to_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (b, c, h, w) to a square and resize it to ``size`` with antialiasing (no-op if already so)."""
    h, w = images.shape[-2:]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        images = images[..., top:top + side, left:left + side]
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return images


def text_mask_through_eot(tokens: torch.Tensor, eot_id: int = CLIP_EOT_ID) -> torch.Tensor:
    """True at non-padding tokens up to and including the first end-of-text token of each row."""
    before_eot = (tokens == eot_id).long().cumsum(dim=-1) == 0
    through_eot = F.pad(before_eot, (1, -1), value=True)
    return through_eot & (tokens != 0)


class BaseClipAdapter(nn.Module):
    """Frozen CLIP behind the interface that ``DiffusionPrior`` and ``Decoder`` use (see module docstring)."""

    def __init__(self, clip: nn.Module, image_mean: Optional[Sequence[float]] = None,
                 image_std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        if (image_mean is None) != (image_std is None):
            raise ValueError("give both image_mean and image_std, or neither")
        self.clip = clip
        self.clip.requires_grad_(False)
        self.clip.eval()
        mean = torch.tensor(image_mean if image_mean is not None else [0.0], dtype=torch.float32)
        std = torch.tensor(image_std if image_std is not None else [1.0], dtype=torch.float32)
        self.register_buffer("image_mean", mean[:, None, None], persistent=False)
        self.register_buffer("image_std", std[:, None, None], persistent=False)

    # properties every adapter provides
    @property
    def dim_latent(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define the property dim_latent")

    @property
    def image_size(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define the property image_size")

    @property
    def image_channels(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define the property image_channels")

    @property
    def max_text_len(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define the property max_text_len")

    @property
    def dim_text_encodings(self) -> int:
        """Width of ``text_encodings``; the latent width unless an adapter says otherwise."""
        return self.dim_latent

    def train(self, mode: bool = True) -> "BaseClipAdapter":
        super().train(mode)
        self.clip.eval()  # the wrapped CLIP stays frozen in eval mode
        return self

    # the public, frozen entry points
    @torch.no_grad()
    def embed_text(self, tokens: torch.Tensor) -> EmbeddedText:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor of shape (batch, seq_len), got "
                             f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
        return self._embed_text(tokens[:, :self.max_text_len].long())

    @torch.no_grad()
    def embed_image(self, images: torch.Tensor) -> EmbeddedImage:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(f"images must have shape (batch, {self.image_channels}, height, width), got "
                             f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
        images = resize_to_square(images.float(), self.image_size)
        return self._embed_image((images - self.image_mean) / self.image_std)

    def _embed_text(self, tokens: torch.Tensor) -> EmbeddedText:
        raise NotImplementedError(f"{type(self).__name__} must implement _embed_text(tokens)")

    def _embed_image(self, images: torch.Tensor) -> EmbeddedImage:
        raise NotImplementedError(f"{type(self).__name__} must implement _embed_image(images)")


def _given_model(adapter: PretrainedMixin, model: Any) -> nn.Module:
    """A CLIP given as an object: checked, and recorded in the adapter's config only then (a model object cannot be
    written into config.json, so saving such an adapter raises TypeError; one loaded by name saves its name)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    adapter.override_config(model=model)
    return model


def _mean_std_as_lists(name: str, value: Any) -> Any:
    """Record the normalisation constants as JSON lists, whatever sequence they were given as."""
    return list(value) if name in ("image_mean", "image_std") and value is not None else value


class BuiltinClipAdapter(PretrainedMixin, BaseClipAdapter):
    """Adapter for this package's :class:`CLIP`; images go in as given (resized only) unless a mean/std is set."""

    @strict_keywords()
    @register_to_config(convert=_mean_std_as_lists)
    def __init__(self, clip: CLIP, image_mean: Optional[Sequence[float]] = None,
                 image_std: Optional[Sequence[float]] = None) -> None:
        if not isinstance(clip, CLIP):
            raise TypeError(f"BuiltinClipAdapter wraps a dalle2_pytorch CLIP, got {type(clip).__name__}")
        super().__init__(clip, image_mean, image_std)

    @property
    def dim_latent(self) -> int:
        return self.clip.dim_latent

    @property
    def dim_text_encodings(self) -> int:
        return self.clip.dim_text

    @property
    def image_size(self) -> int:
        return self.clip.image_size

    @property
    def image_channels(self) -> int:
        return self.clip.channels

    @property
    def max_text_len(self) -> int:
        return self.clip.text_seq_len

    def _embed_text(self, tokens: torch.Tensor) -> EmbeddedText:
        return self.clip.embed_text(tokens)

    def _embed_image(self, images: torch.Tensor) -> EmbeddedImage:
        return self.clip.embed_image(images.to(self.clip.logit_scale.dtype))


def to_clip_adapter(clip: Any) -> Optional[BaseClipAdapter]:
    """Pass adapters through, wrap a raw :class:`CLIP` in :class:`BuiltinClipAdapter`; None stays None."""
    if clip is None or isinstance(clip, BaseClipAdapter):
        return clip
    if isinstance(clip, CLIP):
        return BuiltinClipAdapter(clip)
    raise TypeError(f"clip must be a dalle2_pytorch CLIP or a BaseClipAdapter (e.g. OpenAIClipAdapter, "
                    f"OpenClipAdapter, HFClipAdapter), got {type(clip).__name__}")


class _PackagedClipAdapter(BaseClipAdapter):
    """Shared code of the adapters around pretrained CLIPs, which wrap either

    * a ``transformers.CLIPModel``: text encodings are the text tower's last hidden states (after its final
      LayerNorm), image encodings its last hidden states at the patch positions; or
    * an OpenAI-layout model (``clip`` and ``open_clip``): ``encode_text``, ``encode_image`` and a text tower (the
      model itself, or ``model.text`` in open_clip's CustomTextCLIP) with ``positional_embedding`` and
      ``ln_final``, whose output (captured by a hook) gives the per-token encodings.

    A state dict in OpenAI's layout (what this adapter saved around the ``clip`` package) loads into a
    transformers-backed adapter, converted by :func:`~dalle2_pytorch.clip.openai_weights.openai_state_to_hf`.
    """

    # OpenAI's text semantics: tokens padded to the full context, causal attention only (no padding mask).
    # HFClipAdapter keeps transformers' own: tokens as given, padding after the end token masked out.
    _full_context_text = True

    def __init__(self, model: nn.Module, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        super().__init__(model, image_mean, image_std)
        self._hf = is_hf_clip(model)
        if self._hf:
            return
        self._text_tower = model if hasattr(model, "ln_final") else getattr(model, "text", None)
        if not (hasattr(self._text_tower, "ln_final") and hasattr(self._text_tower, "positional_embedding")):
            raise TypeError(f"{type(model).__name__} is neither a transformers CLIPModel nor has a CLIP-style text "
                            "tower (ln_final, positional_embedding); wrap it in your own BaseClipAdapter subclass")

    @property
    def dim_latent(self) -> int:
        return int(self.clip.config.projection_dim if self._hf else self.clip.visual.output_dim)

    @property
    def dim_text_encodings(self) -> int:
        if self._hf:
            return int(self.clip.config.text_config.hidden_size)
        return int(self._text_tower.ln_final.weight.shape[0])

    @property
    def image_size(self) -> int:
        if self._hf:
            return int(self.clip.config.vision_config.image_size)
        size = getattr(self.clip.visual, "input_resolution", None) or self.clip.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def image_channels(self) -> int:
        return int(self.clip.config.vision_config.num_channels) if self._hf else 3

    @property
    def max_text_len(self) -> int:
        if self._hf:
            return int(self.clip.config.text_config.max_position_embeddings)
        return int(self._text_tower.positional_embedding.shape[0])

    def _model_dtype(self) -> torch.dtype:
        return next(self.clip.parameters()).dtype

    def _embed_text(self, tokens: torch.Tensor) -> EmbeddedText:
        if self._full_context_text and tokens.shape[1] < self.max_text_len:  # OpenAI's towers expect it
            tokens = F.pad(tokens, (0, self.max_text_len - tokens.shape[1]), value=0)
        mask = text_mask_through_eot(tokens)
        if self._hf:
            attention = None if self._full_context_text else mask.long()
            out = self.clip.text_model(input_ids=tokens, attention_mask=attention, return_dict=True)
            text_embed, encodings = self.clip.text_projection(out.pooler_output), out.last_hidden_state
        else:
            captured = {}
            hook = self._text_tower.ln_final.register_forward_hook(
                lambda module, args, output: captured.update(out=output))
            try:
                text_embed = self.clip.encode_text(tokens)
            finally:
                hook.remove()
            encodings = captured["out"]
            if encodings.ndim != 3:
                raise ValueError(f"{type(self.clip).__name__} applies its final LayerNorm after pooling, so it has "
                                 "no per-token text encodings to offer")
            if encodings.shape[:2] != tokens.shape:  # older OpenAI code keeps (n, b, d) order until the end
                encodings = encodings.transpose(0, 1)
        encodings = encodings.float() * mask[..., None]
        return EmbeddedText(F.normalize(text_embed.float(), dim=-1), encodings, mask)

    def _embed_image(self, images: torch.Tensor) -> EmbeddedImage:
        images = images.to(self._model_dtype())
        if not self._hf:
            return EmbeddedImage(F.normalize(self.clip.encode_image(images).float(), dim=-1), None)
        out = self.clip.vision_model(pixel_values=images, return_dict=True)
        image_embed = self.clip.visual_projection(out.pooler_output)
        return EmbeddedImage(F.normalize(image_embed.float(), dim=-1), out.last_hidden_state[:, 1:].float())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        inner = prefix + "clip."
        if self._hf and is_openai_layout({k[len(inner):]: None for k in state_dict if k.startswith(inner)}):
            old = {k[len(inner):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(inner)]}
            state_dict.update({inner + k: v for k, v in openai_state_to_hf(old).items()})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class OpenAIClipAdapter(PretrainedMixin, _PackagedClipAdapter):
    """OpenAI's pretrained CLIP by ``name``, or a given ``model`` (the ``clip`` package's or a transformers one).

    The ViTs (``ViT-B/32``, ``ViT-B/16``, ``ViT-L/14``, ``ViT-L/14@336px``) load OpenAI's weights through
    transformers (``openai/clip-vit-large-patch14`` ...; extra ``openai-clip``), computing what OpenAI's own
    model computes, without torchvision; other names (the ResNets) need OpenAI's ``clip`` package."""

    @strict_keywords()
    @register_to_config(exclude=("model",))
    def __init__(self, name: str = "ViT-B/32", model: Optional[nn.Module] = None) -> None:
        built = openai_clip(name) if model is None else _given_model(self, model)
        super().__init__(built, OPENAI_IMAGE_MEAN, OPENAI_IMAGE_STD)
        self.name = name


class OpenClipAdapter(PretrainedMixin, _PackagedClipAdapter):
    """An open_clip model by ``name``/``pretrained``, or a given ``model``.

    ``pretrained="openai"`` ViTs load through transformers and a ``pretrained`` that is an open_clip checkpoint
    file (a path or Hub id ending in .bin/.pt/.pth/.safetensors) is converted, both without torchvision; other
    ``pretrained`` tags need the ``open_clip`` package (extra ``open-clip``, which needs torchvision)."""

    @strict_keywords()
    @register_to_config(exclude=("model",))
    def __init__(self, name: str = "ViT-B/32", pretrained: str = "laion400m_e32", model: Optional[nn.Module] = None) -> None:
        built = open_clip(name, pretrained) if model is None else _given_model(self, model)
        visual = getattr(built, "visual", None)
        mean = getattr(visual, "image_mean", None) or OPENAI_IMAGE_MEAN
        std = getattr(visual, "image_std", None) or OPENAI_IMAGE_STD
        super().__init__(built, mean, std)
        self.name, self.pretrained = name, pretrained


class HFClipAdapter(PretrainedMixin, _PackagedClipAdapter):
    """A Hugging Face ``transformers.CLIPModel``, loaded by hub ``name`` or given as ``model``.

    Text encodings are the text tower's last hidden states (after its final LayerNorm); image encodings
    its last hidden states at the patch positions.  Inside a checkpoint load the model is built from its
    ``config.json`` in the local Hugging Face cache (fetched only with ``allow_download``).
    """

    _full_context_text = False

    @strict_keywords()
    @register_to_config(exclude=("model",), convert=_mean_std_as_lists)
    def __init__(self, name: str = "openai/clip-vit-base-patch32", model: Optional[nn.Module] = None,
                 image_mean: Sequence[float] = OPENAI_IMAGE_MEAN, image_std: Sequence[float] = OPENAI_IMAGE_STD) -> None:
        built = hf_clip(name, "HFClipAdapter", "hf") if model is None else _given_model(self, model)
        super().__init__(built, image_mean, image_std)
        self.name = name

"""The reference's own training-config JSON files (``TrainDiffusionPriorConfig`` / ``TrainDecoderConfig``,
as LAION published them next to their checkpoints) as loader kwargs, and their ``clip`` section as an adapter.

A prior training config is ``{"prior": {"clip": {...}, "net": {...}, "image_embed_dim": ..., "image_size": ...,
<DiffusionPrior keywords>}, "data": ..., "train": ..., "tracker": ...}``; a decoder training config is
``{"decoder": {"unets": [...], "clip": {...}, "image_sizes": [...], <Decoder keywords>}, "data": ..., ...}``.
``null`` values meant "the default" to the reference's pydantic models and are dropped.

The ``clip`` section is never acted on by the loaders (building a CLIP downloads weights); call
:func:`reference_clip_adapter` on it and pass the adapter as ``clip=``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn

# fields of the reference DiffusionPriorConfig that are not DiffusionPrior keywords here
_PRIOR_CONFIG_ONLY = ("clip", "net", "image_embed_dim", "image_size", "image_channels")


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def is_prior_training_config(config: Mapping[str, Any]) -> bool:
    return isinstance(config.get("prior"), Mapping) and "net" in config["prior"]


def is_decoder_training_config(config: Mapping[str, Any]) -> bool:
    return "unets" not in config and isinstance(config.get("decoder"), Mapping) and "unets" in config["decoder"]


def prior_kwargs_from_training_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], Optional[Any]]:
    """``({"net", "prior", "image_embed_dim"}, clip section or None)`` from a reference prior training config."""
    section = config["prior"]
    if "image_embed_dim" not in section:
        raise ValueError("the training config's 'prior' section has no image_embed_dim")
    prior = {k: v for k, v in _without_none(section).items() if k not in _PRIOR_CONFIG_ONLY}
    kwargs = {"net": _without_none(section["net"]), "prior": prior, "image_embed_dim": section["image_embed_dim"]}
    return kwargs, section.get("clip")


def decoder_kwargs_from_training_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], Optional[Any]]:
    """``({"unets": [...], <Decoder keywords>}, clip section or None)`` from a reference decoder training config."""
    section = dict(config["decoder"])
    clip = section.pop("clip", None)
    unets = [_without_none(unet) for unet in section.pop("unets")]
    return {"unets": unets, **_without_none(section)}, clip


def reference_clip_adapter(section: Mapping[str, Any], **adapter_kwargs: Any) -> nn.Module:
    """Our adapter for a reference ``AdapterConfig`` (``{"make": "openai", "model": "ViT-L/14"}``).

    ``make`` ``"openai"`` gives :class:`~dalle2_pytorch.clip.adapters.OpenAIClipAdapter` and ``"open_clip"``
    :class:`~dalle2_pytorch.clip.adapters.OpenClipAdapter`, named by ``model``; ``adapter_kwargs`` go to the
    adapter (e.g. ``model=`` an already loaded CLIP).  Building by name downloads the CLIP weights.
    """
    from dalle2_pytorch.clip.adapters import OpenAIClipAdapter, OpenClipAdapter

    if not isinstance(section, Mapping):
        raise TypeError(f"the clip section must be a dict like {{'make': 'openai', 'model': 'ViT-L/14'}}, "
                        f"got {section!r}")
    make, name = section.get("make", "openai"), section.get("model", "ViT-L/14")
    if make == "openai":
        return OpenAIClipAdapter(name, **adapter_kwargs)
    if make == "open_clip":
        return OpenClipAdapter(name, **adapter_kwargs)
    raise ValueError(f"clip make {make!r} has no adapter here (supported: 'openai', 'open_clip'); "
                     "build your CLIP adapter yourself and pass it as clip=")

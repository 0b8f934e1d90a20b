"""Pretrained CLIPs by name, for the adapters: OpenAI's ViTs through transformers (no torchvision), anything else
through its own package.

When a checkpoint is being loaded (:func:`dalle2_pytorch.hub.building_from_checkpoint`), a named CLIP is built
from its architecture alone, since the checkpoint's weights replace its own: OpenAI's ViTs from
:data:`~dalle2_pytorch.clip.openai_weights.OPENAI_ARCHITECTURES` without any file, other transformers CLIPs from
their ``config.json`` in the local Hugging Face cache, fetched only with an explicit opt-in.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from torch import nn

from dalle2_pytorch.clip.openai_weights import (OPEN_CLIP_OPENAI_NAMES, OPENAI_ARCHITECTURES, OPENAI_HUB_IDS,
                                                clip_config, hf_clip_from_openai_state, is_openai_layout)
from dalle2_pytorch.hub import building_from_checkpoint, download_allowed, download_refused, resolve_pretrained
from dalle2_pytorch.errors import MissingExtraError, install_hint

OPEN_CLIP_HEAD_WIDTHS = {"ViT-H-14": 80, "ViT-g-14": 88, "ViT-bigG-14": 104}  # open_clip's vision head_width


def import_optional(module: str, adapter: str, extra: str, pip_name: str) -> Any:
    """Import ``module`` or raise an ImportError that says which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"{adapter} needs the `{module}` package: {install_hint(extra)} (or pip install "
                                f"{pip_name}), or pass an already-built model as model=...") from error


def is_hf_clip(model: Any) -> bool:
    """A ``transformers.CLIPModel`` (or anything with its parts: config, text_model, vision_model, projections)."""
    return all(hasattr(model, part) for part in ("config", "text_model", "vision_model", "text_projection",
                                                   "visual_projection"))


def hf_clip(hub_id: str, adapter: str, extra: str, architecture: Optional[dict] = None) -> nn.Module:
    """``transformers.CLIPModel`` ``hub_id`` with its weights; inside a checkpoint load, its architecture only
    (from ``architecture`` if given, else its cached ``config.json``, downloaded only if allowed)."""
    transformers = import_optional("transformers", adapter, extra, "transformers")
    if not building_from_checkpoint():
        return transformers.CLIPModel.from_pretrained(hub_id).eval()
    if architecture is not None:
        config = clip_config(architecture)
    else:
        try:
            config = transformers.CLIPConfig.from_pretrained(hub_id, local_files_only=not download_allowed())
        except OSError as error:
            if download_allowed():
                raise
            raise OSError(download_refused(f"the CLIP {hub_id!r} that the checkpoint names")) from error
    return transformers.CLIPModel(config).eval()


def openai_clip(name: str) -> nn.Module:
    """OpenAI's CLIP ``name``: the ViTs (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px) as a transformers
    CLIPModel; other names (the ResNets) through the ``clip`` package (which needs torchvision)."""
    if name in OPENAI_ARCHITECTURES:
        return hf_clip(OPENAI_HUB_IDS[name], "OpenAIClipAdapter", "openai-clip", OPENAI_ARCHITECTURES[name])
    try:
        package = importlib.import_module("clip")
    except ImportError as error:
        raise ImportError(f"OpenAIClipAdapter({name!r}) needs OpenAI's `clip` package (pip install clip-anytorch, "
                          f"which needs torchvision); without it the ViTs load through transformers: "
                          f"{sorted(OPENAI_ARCHITECTURES)}") from error
    return package.load(name, jit=False, device="cpu")[0]


def open_clip_file(path_or_id: str, name: str) -> nn.Module:
    """An open_clip ViT checkpoint file (OpenAI's layout, e.g. ``open_clip_pytorch_model.bin`` or
    ``open_clip_model.safetensors``, local or a Hub id) as a transformers CLIPModel; ``-quickgelu`` names use
    QuickGELU, others GELU, as open_clip builds them."""
    import torch
    from safetensors.torch import load_file

    try:  # inside a checkpoint load, a file the checkpoint names is used only if it is here already
        path = resolve_pretrained(path_or_id, local_files_only=not download_allowed())
    except FileNotFoundError as error:
        if download_allowed():
            raise
        raise FileNotFoundError(download_refused(f"the open_clip file {path_or_id!r} that the checkpoint names")) \
            from error
    if not path.is_file():
        raise FileNotFoundError(f"open_clip checkpoint file {path_or_id!r} not found (looked at {path})")
    state = load_file(str(path)) if path.suffix == ".safetensors" else \
        torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not is_openai_layout(state):
        raise ValueError(f"{path_or_id} is not an open_clip ViT checkpoint in OpenAI's layout (no visual.conv1)")
    return hf_clip_from_openai_state(state, hidden_act="quick_gelu" if name.endswith("-quickgelu") else "gelu",
                                     vision_head_width=OPEN_CLIP_HEAD_WIDTHS.get(name.replace("-quickgelu", ""), 64))


def open_clip(name: str, pretrained: str) -> nn.Module:
    """An open_clip model: OpenAI's weights (``pretrained="openai"``) through transformers, a checkpoint file
    (``pretrained`` a path or Hub id of one) converted, anything else through ``open_clip`` (needs torchvision)."""
    base = name.replace("/", "-")
    if pretrained == "openai" and base in OPEN_CLIP_OPENAI_NAMES:
        openai_name = OPEN_CLIP_OPENAI_NAMES[base]
        return hf_clip(OPENAI_HUB_IDS[openai_name], "OpenClipAdapter", "open-clip", OPENAI_ARCHITECTURES[openai_name])
    if pretrained.endswith((".bin", ".pt", ".pth", ".safetensors")):
        return open_clip_file(pretrained, base)
    try:
        package = importlib.import_module("open_clip")
    except ImportError as error:
        raise ImportError(f"OpenClipAdapter({name!r}, pretrained={pretrained!r}) needs the `open_clip` package (pip "
                          "install open-clip-torch, which needs torchvision). Without it, pretrained='openai' ViTs "
                          "and open_clip checkpoint files (pretrained='<path or org/repo/file>.bin|.safetensors') "
                          "load through transformers: pip install 'unclip-pytorch[open-clip]'") from error
    # inside a checkpoint load the weights come from the checkpoint: build the architecture only
    weights = None if building_from_checkpoint() else pretrained
    model, _, _ = package.create_model_and_transforms(name, pretrained=weights)
    return model

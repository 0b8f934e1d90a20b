"""Loading a decoder saved by the reference DALLE2-pytorch (1.15.6).

The reference ``Decoder.state_dict()`` holds ``unets.<i>.*`` (renamed to our Unet's names by
:mod:`dalle2_pytorch.decoder.convert`), the noise schedules and low-res noise schedules as
buffers (recomputed here from the config, so dropped), and optionally ``clip.*`` / ``vaes.*``.
Files are read without unpickling: safetensors, or ``.pt``/``.pth`` through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from dalle2_pytorch.decoder.convert import convert_reference_unet_state
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.serialization import load_legacy_state_dict, load_tensors

# reference Decoder keywords that did nothing there and do not exist here
_DEAD_DECODER_KEYWORDS = ("clip_denoised", "clip_x_start", "clip_adapter_overrides")
_RECOMPUTED_PREFIXES = ("noise_schedulers.", "lowres_conds.")


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference state dict from ``.safetensors`` or a ``.pt``/``.pth`` file (``{'model': ...}`` accepted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    return load_legacy_state_dict(path)


def split_reference_kwargs(kwargs: Mapping[str, Any]) -> tuple[list[dict], dict]:
    """``(unet kwargs list, decoder kwargs)`` from ``{'unets': [...], 'decoder': {...}, 'image_sizes': ...}``
    (the fixture layout) or a reference ``decoder`` config section ``{'unets': [...], <decoder keys>}``."""
    if "unets" not in kwargs:
        raise ValueError("kwargs must hold 'unets': a list of the reference Unet keyword dicts")
    unets = [dict(u) for u in kwargs["unets"]]
    decoder = dict(kwargs.get("decoder", {}))
    decoder.update({k: v for k, v in kwargs.items() if k not in ("unets", "decoder")})
    for key in _DEAD_DECODER_KEYWORDS:
        decoder.pop(key, None)
    decoder = {k: tuple(v) if isinstance(v, list) else v for k, v in decoder.items()}
    return unets, decoder


def load_reference_decoder(cls: type, path: str | Path, kwargs: Mapping[str, Any], *,
                           clip: Optional[nn.Module] = None, strict: bool = True):
    """Build ``cls`` (a Decoder) from reference kwargs and load the reference weights into it."""
    unet_kwargs, decoder_kwargs = split_reference_kwargs(kwargs)
    unets = [Unet(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}) for kw in unet_kwargs]
    decoder = cls(unet=tuple(unets), clip=clip, **decoder_kwargs)
    state = read_reference_state(path)

    leftover = {k: v for k, v in state.items() if not k.startswith("unets.") and not k.startswith(_RECOMPUTED_PREFIXES)}
    for index, unet in enumerate(decoder.unets):
        unet.load_state_dict(convert_reference_unet_state(unet, state, index))
    clip_state = {k[len("clip."):]: v for k, v in leftover.items() if k.startswith("clip.")}
    if clip_state and decoder.clip is not None:
        decoder.clip.load_state_dict(clip_state, strict=strict)
    unknown = sorted(k for k in leftover if not k.startswith("clip."))
    if unknown and strict:
        raise ValueError(f"{path}: keys this loader does not convert (reference VQGanVAE weights are not "
                         f"supported; load the VAE yourself and pass strict=False): {unknown[:5]}")
    extra_unets = sorted({k.split(".")[1] for k in state if k.startswith("unets.")} -
                         {str(i) for i in range(len(decoder.unets))})
    if extra_unets:
        raise ValueError(f"{path} holds unets {extra_unets} beyond the {len(decoder.unets)} described by kwargs")
    return decoder

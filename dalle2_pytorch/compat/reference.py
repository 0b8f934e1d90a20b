"""Loading models saved by the reference DALLE2-pytorch (0.15.x to 1.15.6): one reader, one signature.

Both loaders take ``(cls, path, kwargs, *, clip=None, strict=True, version=None, use_ema=True)``:

* ``path``: a local file or a ``hub:<org>/<repo>[@<revision>]/<file>`` name (:mod:`.hub`), holding
  the reference ``state_dict()`` as ``.safetensors``, or a ``.pt``/``.pth`` file read
  without unpickling (``torch.load(weights_only=True)``, see :mod:`.checkpoint`): a bare state
  dict, a trainer save's ``model``, or its ``ema_model`` (preferred; ``use_ema=False`` takes ``model``);
* ``version``: the reference release that wrote the file; by default the one the file records, else
  the one its keys and shapes point to (:mod:`.releases`).  Old releases computed slightly different
  functions, which the models reproduce through constructor keywords the loader sets;
* ``kwargs``: a dict or a JSON file describing the model the way the reference fixtures do
  (a whole fixture description ``{"kwargs": {...}, ...}`` is accepted too);
* ``clip``: a CLIP (or adapter) for the model, since the reference CLIP is not converted;
* ``strict``: keys the loader does not convert are an error (True) or skipped (False).

Weights are renamed by :mod:`dalle2_pytorch.compat.unet` and :mod:`dalle2_pytorch.compat.prior`,
both by the one rule of :mod:`dalle2_pytorch.compat.keys`.  Noise schedules stored as buffers are
recomputed from the config and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from dalle2_pytorch.compat.checkpoint import read_reference_checkpoint
from dalle2_pytorch.hub import resolve_pretrained
from dalle2_pytorch.compat.prior import convert_reference_prior_state
from dalle2_pytorch.compat.train_config import (decoder_kwargs_from_training_config, is_decoder_training_config,
                                                is_prior_training_config, prior_kwargs_from_training_config)
from dalle2_pytorch.compat.releases import detect_release, normalize_legacy_keys, prior_options, unet_options
from dalle2_pytorch.compat.unet import convert_reference_unet_state

ReferenceKwargs = Union[Mapping[str, Any], str, Path]

# reference Decoder keywords that did nothing there and do not exist here
_DEAD_DECODER_KEYWORDS = ("clip_denoised", "clip_x_start", "clip_adapter_overrides")
_RECOMPUTED_DECODER_PREFIXES = ("noise_schedulers.", "lowres_conds.")


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference state dict from ``.safetensors`` or a ``.pt``/``.pth`` file in any published layout
    (see :func:`~dalle2_pytorch.compat.checkpoint.read_reference_checkpoint`; ``ema_model`` preferred)."""
    return read_reference_checkpoint(resolve_pretrained(path)).state


def read_reference_kwargs(kwargs: ReferenceKwargs) -> dict[str, Any]:
    """The model description as a dict, from a dict or a JSON file (a local path or a Hub name);
    a fixture's ``kwargs`` entry is unwrapped."""
    if not isinstance(kwargs, Mapping):
        kwargs = json.loads(resolve_pretrained(kwargs).read_text())
    kwargs = dict(kwargs)
    if "kwargs" in kwargs:  # a whole fixture description
        kwargs = dict(kwargs["kwargs"])
    return kwargs


def _tuples(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists as the tuples our constructors expect."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


# ---------------------------------------------------------------------------------- decoder
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
    return unets, _tuples(decoder)


def load_reference_decoder(cls: type, path: str | Path, kwargs: ReferenceKwargs, *,
                           clip: Optional[nn.Module] = None, strict: bool = True, version: Optional[str] = None,
                           use_ema: bool = True):
    """Build ``cls`` (a Decoder; its unets are ``cls.unet_class``) from reference kwargs and load the reference
    weights into it."""
    description = read_reference_kwargs(kwargs)
    if is_decoder_training_config(description):  # the reference's TrainDecoderConfig JSON
        description = decoder_kwargs_from_training_config(description)[0]
    unet_kwargs, decoder_kwargs = split_reference_kwargs(description)
    checkpoint = read_reference_checkpoint(resolve_pretrained(path), use_ema=use_ema)
    release = detect_release(checkpoint.state, "decoder", version=version, saved_version=checkpoint.saved_version)
    options = unet_options(release)
    unets = [cls.unet_class(**{**options, **_tuples(kw)}) for kw in unet_kwargs]
    decoder = cls(unet=tuple(unets), clip=clip, **decoder_kwargs)
    state = normalize_legacy_keys(checkpoint.state)

    leftover = {k: v for k, v in state.items()
                if not k.startswith("unets.") and not k.startswith(_RECOMPUTED_DECODER_PREFIXES)}
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


# ---------------------------------------------------------------------------------- prior
def load_reference_prior(cls: type, path: str | Path, kwargs: ReferenceKwargs, *,
                         clip: Any = None, strict: bool = True, version: Optional[str] = None, use_ema: bool = True):
    """Build ``cls`` (a DiffusionPrior; its network is ``cls.network_class``) from ``{"net": DiffusionPriorNetwork
    kwargs, "prior": DiffusionPrior kwargs, "image_embed_dim": int}`` and load the reference network weights into it."""
    config = read_reference_kwargs(kwargs)
    if is_prior_training_config(config):  # the reference's TrainDiffusionPriorConfig JSON
        config = prior_kwargs_from_training_config(config)[0]
    unknown = set(config) - {"net", "prior", "image_embed_dim"}
    if unknown or "net" not in config:
        raise ValueError(f"config must have keys 'net', 'prior' and optionally 'image_embed_dim'; "
                         f"got {sorted(config)}")
    checkpoint = read_reference_checkpoint(resolve_pretrained(path), use_ema=use_ema)
    release = detect_release(checkpoint.state, "prior", version=version, saved_version=checkpoint.saved_version)
    options, bias_scale = prior_options(release)
    net = cls.network_class(**{**options, **config["net"]})
    prior_kwargs = dict(config.get("prior", {}))
    if "image_embed_dim" in config:
        prior_kwargs.setdefault("image_embed_dim", config["image_embed_dim"])
    if clip is None and "image_embed_dim" not in prior_kwargs:
        prior_kwargs["image_embed_dim"] = net.dim
    prior = cls(net, clip=clip, **prior_kwargs)
    state = convert_reference_prior_state(normalize_legacy_keys(checkpoint.state), strict=strict)
    network_state = {key[len("net."):]: value for key, value in state.items()}
    bias_key = "transformer.rel_pos_bias.bucket_bias.weight"
    if bias_scale != 1 and bias_key in network_state:  # pb-relax attention of 0.23.3-1.4.2 (see .releases)
        network_state[bias_key] = network_state[bias_key] * bias_scale
    prior.net.load_state_dict(network_state, strict=True)
    return prior

"""Reference U-Net weights (a ``Unet``, or the ``unets.<i>.`` of a ``Decoder``) in our :class:`Unet`.

Our module tree names what the reference indexes by position (``downs.1.2.0`` becomes
``downs.1.blocks.0``), so reference keys are renamed by :data:`UNET_RULES` (see
:mod:`dalle2_pytorch.compat.keys`) and reshaped where a layer is stored differently (the SP-conv
downsample is one 2×2 strided conv here; norms keep 1-d gains).  The reference's null embeddings
for conditions a unet does not use are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch

from dalle2_pytorch.compat.keys import rename_key

# applied in order to each key (without the "unets.<i>." prefix)
UNET_RULES: list[tuple[str, str]] = [
    (r"^null_image_embed$", "cond.null_image_tokens"),
    (r"^null_image_hiddens$", "cond.null_image_hidden"),
    (r"^null_text_embed$", "cond.null_text_tokens"),
    (r"^to_time_hiddens\.1\.", "cond.time_to_hidden.linear."),
    (r"^to_time_tokens\.0\.", "cond.time_to_tokens."),
    (r"^to_time_cond\.0\.", "cond.time_to_cond."),
    (r"^image_to_tokens\.0\.", "cond.image_to_tokens."),
    (r"^to_image_hiddens\.0\.", "cond.image_to_hidden."),
    (r"^text_to_cond\.", "cond.text_to_tokens."),
    (r"^to_lowres_noise_cond\.1\.", "cond.lowres_noise_to_hidden.linear."),
    (r"^to_lowres_noise_cond\.3\.", "cond.lowres_noise_to_cond."),
    (r"^(norm_cond|norm_mid_cond)\.", r"cond.\1."),
    (r"^downs\.(\d+)\.0\.1\.", r"downs.\1.downsample_in.conv."),
    (r"^downs\.(\d+)\.0\.(weight|bias)$", r"downs.\1.downsample_in.conv.\2"),  # 4x4 conv (<= 1.9)
    (r"^downs\.(\d+)\.0\.convs\.", r"downs.\1.downsample_in.convs."),
    (r"^downs\.(\d+)\.1\.", r"downs.\1.init_block."),
    (r"^downs\.(\d+)\.2\.(\d+)\.", r"downs.\1.blocks.\2."),
    (r"^downs\.(\d+)\.3\.(fn\.)?fn\.", r"downs.\1.attn."),
    (r"^downs\.(\d+)\.4\.1\.", r"downs.\1.to_next_stage.conv."),
    (r"^downs\.(\d+)\.4\.", r"downs.\1.to_next_stage."),
    (r"^ups\.(\d+)\.0\.", r"ups.\1.init_block."),
    (r"^ups\.(\d+)\.1\.(\d+)\.", r"ups.\1.blocks.\2."),
    (r"^ups\.(\d+)\.2\.(fn\.)?fn\.", r"ups.\1.attn."),
    (r"^ups\.(\d+)\.3\.(net\.0|1)\.", r"ups.\1.upsample.conv."),
    (r"^ups\.(\d+)\.3\.(weight|bias)$", r"ups.\1.upsample.conv.\2"),  # ConvTranspose (0.15-0.20)
    (r"^mid_attn\.fn\.fn\.", "mid_attn."),
    (r"time_mlp\.1\.", "time_mlp."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.to_out\.1\.g$", ".out_norm.weight"),
    (r"\.norm\.g$", ".norm.weight"),
]
_OPTIONAL_IN_REFERENCE = {"cond.null_image_tokens", "cond.null_image_hidden", "cond.null_text_tokens"}

if TYPE_CHECKING:  # pragma: no cover - the compat layer converts state dicts; it builds no models
    from dalle2_pytorch.decoder.unet import Unet


def reference_key_to_ours(key: str) -> str:
    """Rename one reference Unet state-dict key (without the ``unets.<i>.`` prefix)."""
    return rename_key(key, UNET_RULES)[0]


def convert_reference_unet_state(unet: Unet, ref_state: Mapping[str, torch.Tensor],
                                 index: int | None = None) -> dict[str, torch.Tensor]:
    """Our state dict for ``unet`` from a reference ``Decoder`` state (``index`` picks ``unets.<index>.``)
    or, with ``index=None``, from a reference ``Unet`` state dict."""
    prefix = "" if index is None else f"unets.{index}."
    target = unet.state_dict()
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in ref_state.items():
        if not key.startswith(prefix):
            continue
        ours = reference_key_to_ours(key[len(prefix):])
        if ours not in target and ours.replace(".to_next_stage.", ".to_next_stage.conv.") in target:
            ours = ours.replace(".to_next_stage.", ".to_next_stage.conv.")  # the 4x4 downsample of <= 1.9
        if ours not in target:
            if ours not in _OPTIONAL_IN_REFERENCE:
                unexpected.append(key)
            continue
        if value.numel() != target[ours].numel():
            raise ValueError(f"reference {key} has shape {tuple(value.shape)} but our {ours} has "
                             f"{tuple(target[ours].shape)}: the Unet was built with different settings")
        out[ours] = value.reshape(target[ours].shape)
    missing = sorted(set(target) - set(out))
    if unexpected or missing:
        raise ValueError(f"reference state (prefix {prefix!r}) does not fit this Unet: "
                         f"unexpected {unexpected[:5]}, missing {missing[:5]}; was the Unet built with the "
                         f"reference's kwargs and the flags its Decoder set (lowres_cond, channels_out, ...)?")
    return out


def load_reference_unet_state(unet: Unet, ref_state: Mapping[str, torch.Tensor], index: int | None = None) -> Unet:
    """Load reference weights into ``unet`` in place (see :func:`convert_reference_unet_state`)."""
    unet.load_state_dict(convert_reference_unet_state(unet, ref_state, index))
    return unet

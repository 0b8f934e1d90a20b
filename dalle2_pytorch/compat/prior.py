"""Reference DALLE2-pytorch 1.15.6 prior weights under this package's names.

The two networks compute the same function; only parameter names differ.  The mapping
(reference name → ours), for the ``DiffusionPriorNetwork`` (prefix ``net.`` inside a prior):

==============================================================  =====================================
reference                                                       this package
==============================================================  =====================================
``to_text_embeds.0.{weight,bias}``                              ``text_embed_proj.{weight,bias}``
``to_image_embeds.0.{weight,bias}``                             ``image_embed_proj.{weight,bias}``
``to_time_embeds.0.weight`` (discrete time)                     ``time_embed.table.weight``
``to_time_embeds.0.1.net.{0.0,1.0,2}.*`` (continuous time MLP)  ``time_embed.mlp.{0,2,4}.*``
``causal_transformer.init_norm.g`` / ``.norm.g``                ``transformer.norm_in.weight`` / ``.norm_out.weight``
``causal_transformer.project_out.weight``                       ``transformer.project_out.weight``
``causal_transformer.rel_pos_bias.relative_attention_bias``     ``transformer.rel_pos_bias.bucket_bias``
``causal_transformer.layers.i.0.null_kv``                        ``transformer.blocks.i.attn.null_kv``
``causal_transformer.layers.i.0.{to_q,to_kv}.weight``           ``transformer.blocks.i.attn.to_qkv.weight`` (rows: q, then kv)
``causal_transformer.layers.i.0.norm.g``                        ``transformer.blocks.i.attn.norm.weight``
``causal_transformer.layers.i.0.to_out.0`` / ``.to_out.1.g``    ``transformer.blocks.i.attn.to_out`` / ``.out_norm.weight``
``causal_transformer.layers.i.1.{0.g,1,3.g,5}``                 ``transformer.blocks.i.ff.{norm.weight,proj_in,post_norm.weight,proj_out}``
``learned_query``, ``null_text_encodings``, ``null_text_embeds``, ``null_image_embed``   unchanged
==============================================================  =====================================

Dropped: ``causal_transformer.layers.i.0.rotary_emb.freqs`` (fixed frequencies we recompute; checked
equal), and at prior level ``noise_scheduler.*`` (the schedule is rebuilt from the config) and
``clip.*`` (the CLIP is supplied separately).
"""

from __future__ import annotations

import re

import torch

from dalle2_pytorch.compat.keys import rename_key

PRIOR_NETWORK_RULES: list[tuple[str, str]] = [
    (r"^to_text_embeds\.0\.", "text_embed_proj."),
    (r"^to_image_embeds\.0\.", "image_embed_proj."),
    (r"^to_time_embeds\.0\.weight$", "time_embed.table.weight"),
    (r"^to_time_embeds\.0\.1\.net\.0\.0\.", "time_embed.mlp.0."),
    (r"^to_time_embeds\.0\.1\.net\.1\.0\.", "time_embed.mlp.2."),
    (r"^to_time_embeds\.0\.1\.net\.2\.", "time_embed.mlp.4."),
    (r"^causal_transformer\.init_norm\.g$", "transformer.norm_in.weight"),
    (r"^causal_transformer\.norm\.g$", "transformer.norm_out.weight"),
    (r"^causal_transformer\.project_out\.", "transformer.project_out."),
    (r"^causal_transformer\.rel_pos_bias\.relative_attention_bias\.", "transformer.rel_pos_bias.bucket_bias."),
    (r"^causal_transformer\.layers\.(\d+)\.0\.norm\.g$", r"transformer.blocks.\1.attn.norm.weight"),
    (r"^causal_transformer\.layers\.(\d+)\.0\.to_out\.0\.", r"transformer.blocks.\1.attn.to_out."),
    (r"^causal_transformer\.layers\.(\d+)\.0\.to_out\.1\.g$", r"transformer.blocks.\1.attn.out_norm.weight"),
    (r"^causal_transformer\.layers\.(\d+)\.0\.(null_kv|to_q\.weight|to_kv\.weight)$", r"transformer.blocks.\1.attn.\2"),
    (r"^causal_transformer\.layers\.(\d+)\.1\.0\.g$", r"transformer.blocks.\1.ff.norm.weight"),
    (r"^causal_transformer\.layers\.(\d+)\.1\.1\.", r"transformer.blocks.\1.ff.proj_in."),
    (r"^causal_transformer\.layers\.(\d+)\.1\.3\.g$", r"transformer.blocks.\1.ff.post_norm.weight"),
    (r"^causal_transformer\.layers\.(\d+)\.1\.5\.", r"transformer.blocks.\1.ff.proj_out."),
    (r"^(learned_query|null_text_encodings|null_text_embeds|null_image_embed)$", r"\1"),
]
_ROTARY_FREQS = re.compile(r"^causal_transformer\.layers\.\d+\.0\.rotary_emb\.freqs$")


def convert_reference_network_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference ``DiffusionPriorNetwork`` state dict to this package's names.

    Raises ValueError on a key the mapping does not know, so a layout change never loads silently.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _ROTARY_FREQS.match(key):
            _check_rotary_freqs(key, tensor)
            continue
        new_key, matched = rename_key(key, PRIOR_NETWORK_RULES)
        if not matched:
            raise ValueError(f"unknown reference prior-network parameter {key!r}; "
                             "is this a DALLE2-pytorch 1.x checkpoint?")
        out[new_key] = tensor
    return _fuse_qkv(out)


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack each attention's ``to_q`` and ``to_kv`` weights into our single ``to_qkv`` projection."""
    for q_key in [key for key in state if key.endswith(".attn.to_q.weight")]:
        prefix = q_key[: -len("to_q.weight")]
        kv_key = prefix + "to_kv.weight"
        if kv_key not in state:
            raise ValueError(f"reference checkpoint has {q_key!r} but no matching to_kv weight")
        state[prefix + "to_qkv.weight"] = torch.cat((state.pop(q_key), state.pop(kv_key)), dim=0)
    return state


def convert_reference_prior_state(state: dict[str, torch.Tensor], *, strict: bool = True) -> dict[str, torch.Tensor]:
    """Rename a reference ``DiffusionPrior`` state dict (``net.*``, ``noise_scheduler.*``, ``clip.*``).

    Other top-level keys are an error, or with ``strict=False`` ignored.
    """
    network = {}
    for key, tensor in state.items():
        if key.startswith("net."):
            network[key[len("net."):]] = tensor
        elif key.startswith(("noise_scheduler.", "clip.")) or key == "_dummy" or not strict:
            continue
        else:
            raise ValueError(f"unknown reference prior parameter {key!r}; expected net.*, noise_scheduler.* or clip.*")
    return {f"net.{key}": tensor for key, tensor in convert_reference_network_state(network).items()}


def _check_rotary_freqs(key: str, freqs: torch.Tensor) -> None:
    dim = 2 * freqs.numel()
    expected = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    if not torch.allclose(freqs.float().cpu(), expected, rtol=1e-5, atol=0):
        raise ValueError(f"{key} holds custom rotary frequencies, which this package does not support")

"""OpenAI's CLIP weights in a ``transformers.CLIPModel``: no ``clip`` / ``open_clip`` package, so no torchvision.

* :data:`OPENAI_ARCHITECTURES` - the ViTs OpenAI published, in the numbers of the ``clip`` package's
  ``build_model`` (``embed_dim``, ``image_resolution``, ``vision_layers``, ``vision_width``, ``vision_patch_size``,
  ``context_length``, ``vocab_size``, ``transformer_width``, ``transformer_heads``, ``transformer_layers``), and
  :data:`OPENAI_HUB_IDS`, the same weights converted by Hugging Face (``openai/clip-vit-large-patch14`` ...);
* :func:`openai_architecture` reads those numbers off a state dict in OpenAI's layout (as ``build_model`` does);
* :func:`clip_config` turns them into a ``CLIPConfig`` computing OpenAI's function (QuickGELU, LayerNorm eps
  1e-5, 64-wide heads, the text pooled at the largest token id);
* :func:`openai_state_to_hf` renames and splits an OpenAI-layout state dict (``visual.conv1``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``mlp.c_fc``, ``ln_final``, ``text_projection`` ...)
  into CLIPModel's; open_clip's ViT CLIPs share the layout (pass ``hidden_act="gelu"`` for theirs).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch

_VIT_B = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, context_length=77,
              vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
_VIT_L = dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
              context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12, transformer_layers=12)
OPENAI_ARCHITECTURES: dict[str, dict[str, int]] = {
    "ViT-B/32": {**_VIT_B, "vision_patch_size": 32},
    "ViT-B/16": {**_VIT_B, "vision_patch_size": 16},
    "ViT-L/14": _VIT_L,
    "ViT-L/14@336px": {**_VIT_L, "image_resolution": 336},
}
OPENAI_HUB_IDS = {"ViT-B/32": "openai/clip-vit-base-patch32", "ViT-B/16": "openai/clip-vit-base-patch16",
                  "ViT-L/14": "openai/clip-vit-large-patch14", "ViT-L/14@336px": "openai/clip-vit-large-patch14-336"}
# open_clip spells the same models with dashes; pretrained="openai" are these weights
OPEN_CLIP_OPENAI_NAMES = {"ViT-B-32": "ViT-B/32", "ViT-B-16": "ViT-B/16", "ViT-L-14": "ViT-L/14",
                          "ViT-L-14-336": "ViT-L/14@336px"}
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's TorchScript files


def _layer_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"{re.escape(prefix)}resblocks\.(\d+)\.")
    return len({m.group(1) for key in state for m in [pattern.match(key)] if m})


def openai_architecture(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The ``build_model`` numbers of a ViT CLIP state dict in OpenAI's layout (ValueError for a ResNet one)."""
    if "visual.conv1.weight" not in state or "visual.class_embedding" not in state:
        raise ValueError("not a ViT CLIP state dict in OpenAI's layout (no visual.conv1.weight / "
                         "visual.class_embedding); ResNet CLIPs (RN50 ...) have no transformers equivalent here")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    width = state["ln_final.weight"].shape[0]
    return dict(embed_dim=state["text_projection"].shape[1], image_resolution=patch * grid,
                vision_layers=_layer_count(state, "visual.transformer."), vision_width=vision_width,
                vision_patch_size=patch, context_length=state["positional_embedding"].shape[0],
                vocab_size=state["token_embedding.weight"].shape[0], transformer_width=width,
                transformer_heads=width // 64, transformer_layers=_layer_count(state, "transformer."))


def clip_config(architecture: Mapping[str, int], hidden_act: str = "quick_gelu", *, vision_head_width: int = 64,
                mlp_widths: Optional[tuple[int, int]] = None) -> Any:
    """A ``transformers.CLIPConfig`` computing what OpenAI's ``CLIP(**architecture)`` computes.

    ``eos_token_id=2`` selects transformers' original pooling (the position of the largest token id), which is
    OpenAI's ``text.argmax(dim=-1)`` even for rows cut before their end token.  open_clip's larger ViTs differ
    only in ``vision_head_width`` and the MLP widths ``(text, vision)`` (default 4x the widths)."""
    import transformers

    a = dict(architecture)
    text_mlp, vision_mlp = mlp_widths or (4 * a["transformer_width"], 4 * a["vision_width"])
    text = dict(vocab_size=a["vocab_size"], hidden_size=a["transformer_width"],
                intermediate_size=text_mlp, num_hidden_layers=a["transformer_layers"],
                num_attention_heads=a["transformer_heads"], max_position_embeddings=a["context_length"],
                hidden_act=hidden_act, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    vision = dict(hidden_size=a["vision_width"], intermediate_size=vision_mlp,
                  num_hidden_layers=a["vision_layers"], num_attention_heads=a["vision_width"] // vision_head_width,
                  image_size=a["image_resolution"], patch_size=a["vision_patch_size"], num_channels=3,
                  hidden_act=hidden_act, layer_norm_eps=1e-5)
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=a["embed_dim"])


_TOP_LEVEL = {  # OpenAI name -> (CLIPModel name, transpose)
    "logit_scale": ("logit_scale", False),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "text_projection": ("text_projection.weight", True),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.proj": ("visual_projection.weight", True),
}
_NORMS = {"ln_final": "text_model.final_layer_norm", "visual.ln_pre": "vision_model.pre_layrnorm",
          "visual.ln_post": "vision_model.post_layernorm"}
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_BLOCK_KEY = re.compile(r"(?P<tower>visual\.)?transformer\.resblocks\.(?P<i>\d+)\.(?P<part>.+)\.(?P<kind>weight|bias)")


def openai_state_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (OpenAI's CLIP layout) with CLIPModel's names: ``in_proj`` split into q/k/v, projections
    transposed; OpenAI's extra int entries and the text ``attn_mask`` buffer dropped.  Unknown keys are an error."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in _OPENAI_ONLY_KEYS or key == "attn_mask":
            continue
        if key in _TOP_LEVEL:
            name, transpose = _TOP_LEVEL[key]
            out[name] = value.t().contiguous() if transpose else value
            continue
        norm, _, kind = key.rpartition(".")
        if norm in _NORMS and kind in ("weight", "bias"):
            out[f"{_NORMS[norm]}.{kind}"] = value
            continue
        match = _BLOCK_KEY.fullmatch(key.replace("attn.in_proj_weight", "attn.in_proj.weight")
                                     .replace("attn.in_proj_bias", "attn.in_proj.bias"))
        if match is None or (match["part"] not in _BLOCK and match["part"] != "attn.in_proj"):
            unknown.append(key)
            continue
        layer = f"{'vision_model' if match['tower'] else 'text_model'}.encoder.layers.{match['i']}"
        if match["part"] == "attn.in_proj":
            for projection, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{layer}.self_attn.{projection}_proj.{match['kind']}"] = chunk.contiguous()
        else:
            out[f"{layer}.{_BLOCK[match['part']]}.{match['kind']}"] = value
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not in OpenAI's ViT CLIP layout, e.g. {unknown[:5]}")
    return out


def is_openai_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` holds a ViT CLIP in OpenAI's layout (the ``clip`` package's, or open_clip's)."""
    return "visual.conv1.weight" in state and "ln_final.weight" in state


def hf_clip_from_openai_state(state: Mapping[str, torch.Tensor], hidden_act: str = "quick_gelu",
                              vision_head_width: int = 64) -> Any:
    """A ``transformers.CLIPModel`` holding ``state`` (OpenAI's layout), in eval mode."""
    import transformers

    mlp_widths = (state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    config = clip_config(openai_architecture(state), hidden_act, vision_head_width=vision_head_width,
                         mlp_widths=mlp_widths)
    model = transformers.CLIPModel(config)
    model.load_state_dict(openai_state_to_hf(state), strict=True)
    return model.eval()

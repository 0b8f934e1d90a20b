"""OpenAI's CLIP weights in transformers' CLIPModel: a tiny random CLIP in OpenAI's state-dict layout, converted,
computes what OpenAI's model definition computes.

``openai_forward`` below is written from OpenAI's ``clip/model.py`` (VisionTransformer, Transformer with
ResidualAttentionBlocks, QuickGELU, ``encode_text`` / ``encode_image``), directly on the state dict, independent
of transformers and of the converter."""

import math

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.clip.tokenizer import tokenize

transformers = pytest.importorskip("transformers", reason="optional extra 'hf' (transformers) not installed")

from dalle2_pytorch.clip.openai_weights import (OPENAI_ARCHITECTURES, clip_config, hf_clip_from_openai_state,  # noqa: E402
                                                openai_architecture, openai_state_to_hf)

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
            context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=2)


def random_openai_state(a=TINY, seed=0) -> dict:
    """Random weights with the names and shapes of OpenAI's ``CLIP(**a)`` (ViT), biases and norms non-trivial."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    state = {"logit_scale": torch.tensor(math.log(1 / 0.07)), "token_embedding.weight": r(a["vocab_size"], a["transformer_width"]),
             "positional_embedding": r(a["context_length"], a["transformer_width"], scale=0.01),
             "text_projection": r(a["transformer_width"], a["embed_dim"], scale=0.1),
             "visual.conv1.weight": r(a["vision_width"], 3, a["vision_patch_size"], a["vision_patch_size"]),
             "visual.class_embedding": r(a["vision_width"]),
             "visual.positional_embedding": r((a["image_resolution"] // a["vision_patch_size"]) ** 2 + 1, a["vision_width"]),
             "visual.proj": r(a["vision_width"], a["embed_dim"], scale=0.1)}
    for prefix, width in (("", a["transformer_width"]), ("visual.", a["vision_width"])):
        for norm in (["ln_final"] if not prefix else ["ln_pre", "ln_post"]):
            state[f"{prefix}{norm}.weight"], state[f"{prefix}{norm}.bias"] = 1 + r(width), r(width)
        for i in range(a["transformer_layers"] if not prefix else a["vision_layers"]):
            block = f"{prefix}transformer.resblocks.{i}."
            state.update({block + "attn.in_proj_weight": r(3 * width, width, scale=0.1), block + "attn.in_proj_bias": r(3 * width),
                          block + "attn.out_proj.weight": r(width, width, scale=0.1), block + "attn.out_proj.bias": r(width),
                          block + "ln_1.weight": 1 + r(width), block + "ln_1.bias": r(width),
                          block + "ln_2.weight": 1 + r(width), block + "ln_2.bias": r(width),
                          block + "mlp.c_fc.weight": r(4 * width, width, scale=0.1), block + "mlp.c_fc.bias": r(4 * width),
                          block + "mlp.c_proj.weight": r(width, 4 * width, scale=0.1), block + "mlp.c_proj.bias": r(width)})
    return state


# ----------------------------------------------------------------------------- OpenAI's forward, from model.py
def _ln(s, name, x):
    return F.layer_norm(x, x.shape[-1:], s[name + ".weight"], s[name + ".bias"], eps=1e-5)


def _residual_block(s, block, x, attn_mask=None):
    """ResidualAttentionBlock: x + attn(ln_1(x)), then x + mlp(ln_2(x)); mlp = c_fc, QuickGELU, c_proj."""
    width = x.shape[-1]
    heads = width // 64
    h = _ln(s, block + "ln_1", x)
    q, k, v = (h @ s[block + "attn.in_proj_weight"].t() + s[block + "attn.in_proj_bias"]).chunk(3, dim=-1)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, width // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if attn_mask is not None:
        scores = scores + attn_mask
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    x = x + attended @ s[block + "attn.out_proj.weight"].t() + s[block + "attn.out_proj.bias"]
    h = _ln(s, block + "ln_2", x) @ s[block + "mlp.c_fc.weight"].t() + s[block + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ s[block + "mlp.c_proj.weight"].t() + s[block + "mlp.c_proj.bias"]


def openai_encode_text(s, text):
    x = s["token_embedding.weight"][text] + s["positional_embedding"]
    n = text.shape[1]
    mask = torch.full((n, n), float("-inf")).triu_(1)  # build_attention_mask: causal
    layers = sum(1 for k in s if k.startswith("transformer.resblocks.") and k.endswith("in_proj_weight"))
    for i in range(layers):
        x = _residual_block(s, f"transformer.resblocks.{i}.", x, mask)
    x = _ln(s, "ln_final", x)
    return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ s["text_projection"]


def openai_encode_image(s, image):
    patch = s["visual.conv1.weight"].shape[-1]
    x = F.conv2d(image, s["visual.conv1.weight"], stride=patch)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + s["visual.positional_embedding"]
    x = _ln(s, "visual.ln_pre", x)
    layers = sum(1 for k in s if k.startswith("visual.transformer.resblocks.") and k.endswith("in_proj_weight"))
    for i in range(layers):
        x = _residual_block(s, f"visual.transformer.resblocks.{i}.", x)
    return _ln(s, "visual.ln_post", x[:, 0]) @ s["visual.proj"]


# ----------------------------------------------------------------------------- tests
def _features(output):
    return getattr(output, "pooler_output", output)  # transformers 5 returns an output object, 4 a tensor


def test_converted_weights_compute_openai_clip():
    state = random_openai_state()
    assert openai_architecture(state) == TINY
    model = hf_clip_from_openai_state(state)
    tokens = tokenize(["a photo of a cat", "a red square on a blue background", ""])
    cut = F.pad(tokens[:, :4], (0, 73))  # rows cut before their end token pool at the largest id, as argmax does
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for text in (tokens, cut):
            ours = _features(model.get_text_features(input_ids=text))
            assert torch.allclose(ours, openai_encode_text(state, text), atol=2e-5), (ours - openai_encode_text(state, text)).abs().max()
        ours = _features(model.get_image_features(pixel_values=images))
        assert torch.allclose(ours, openai_encode_image(state, images), atol=2e-5)
        assert torch.equal(model.logit_scale, state["logit_scale"])


def test_architecture_table_matches_what_the_layout_gives():
    for name, architecture in OPENAI_ARCHITECTURES.items():
        config = clip_config(architecture)
        assert config.vision_config.num_attention_heads * 64 == architecture["vision_width"], name
        assert config.text_config.hidden_act == config.vision_config.hidden_act == "quick_gelu"
    big = OPENAI_ARCHITECTURES["ViT-L/14"]
    assert (big["vision_width"], big["vision_layers"], big["embed_dim"]) == (1024, 24, 768)


def test_conversion_errors_name_the_keys():
    state = random_openai_state()
    with pytest.raises(ValueError, match="not in OpenAI's ViT CLIP layout.*visual.extra"):
        openai_state_to_hf({**state, "visual.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="ResNet"):
        openai_architecture({k: v for k, v in state.items() if not k.startswith("visual.conv1")})
    dropped = openai_state_to_hf({**state, "input_resolution": torch.tensor(32), "attn_mask": torch.zeros(77, 77)})
    assert "input_resolution" not in dropped and "attn_mask" not in dropped

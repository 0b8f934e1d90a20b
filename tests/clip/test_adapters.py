"""Adapters: the frozen embed_text / embed_image interface over our CLIP and pretrained CLIPs.

Pretrained packages are never asked to download: the wrapped models are built from random
initialisation with tiny configs. `clip` (OpenAI) and `open_clip` need torchvision, which this
project does not install; their tests skip with a reason unless those packages are present, and the
shared OpenAI-layout code is also exercised through a small stand-in model with the same interface.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.clip.adapters import (OPENAI_IMAGE_MEAN, OPENAI_IMAGE_STD, BaseClipAdapter, BuiltinClipAdapter,
                                          HFClipAdapter, OpenAIClipAdapter, OpenClipAdapter, resize_to_square,
                                          text_mask_through_eot, to_clip_adapter)
from dalle2_pytorch.clip.tokenizer import tokenize
from tests.factories import tiny_clip

MEAN = torch.tensor(OPENAI_IMAGE_MEAN)[:, None, None]
STD = torch.tensor(OPENAI_IMAGE_STD)[:, None, None]


# ----------------------------------------------------------------------------- our CLIP
def test_to_clip_adapter_wraps_our_clip_and_passes_adapters_through():
    clip = tiny_clip()
    adapter = to_clip_adapter(clip)
    assert isinstance(adapter, BuiltinClipAdapter) and adapter.clip is clip
    assert to_clip_adapter(adapter) is adapter
    assert to_clip_adapter(None) is None
    with pytest.raises(TypeError, match="BaseClipAdapter"):
        to_clip_adapter(nn.Linear(2, 2))
    assert (adapter.dim_latent, adapter.image_size, adapter.image_channels, adapter.max_text_len) == (16, 16, 3, 8)
    assert adapter.dim_text_encodings == 32


def test_builtin_adapter_matches_clip_and_is_frozen():
    clip = tiny_clip()
    adapter = to_clip_adapter(clip).train()
    assert not clip.training and not any(p.requires_grad for p in adapter.parameters())
    tokens = torch.randint(1, 100, (2, 12))
    tokens[1, 5:] = 0
    embedded = adapter.embed_text(tokens)  # cut to max_text_len=8
    expected = clip.embed_text(tokens[:, :8])
    for got, want in zip(embedded, expected):
        assert torch.equal(got, want)
    assert not embedded.text_embed.requires_grad
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(adapter.embed_image(images).image_embed, clip.embed_image(images).image_embed)


def test_images_are_resized_with_antialiasing_and_centre_cropped():
    adapter = to_clip_adapter(tiny_clip())
    big = torch.rand(2, 3, 40, 32)
    expected = F.interpolate(big[:, :, 4:36], size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(resize_to_square(big, 16), expected)
    assert torch.allclose(adapter.embed_image(big).image_embed, adapter.clip.embed_image(expected).image_embed)
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\), got \(2, 1, 16, 16\)"):
        adapter.embed_image(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="integer tensor"):
        adapter.embed_text(torch.rand(2, 8))


def test_builtin_adapter_normalises_when_given_mean_and_std():
    clip = tiny_clip()
    adapter = BuiltinClipAdapter(clip, image_mean=OPENAI_IMAGE_MEAN, image_std=OPENAI_IMAGE_STD)
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(adapter.embed_image(images).image_embed, clip.embed_image((images - MEAN) / STD).image_embed)


def test_builtin_adapter_save_load(tmp_path):
    adapter = to_clip_adapter(tiny_clip())
    adapter.save_pretrained(tmp_path)
    loaded = BuiltinClipAdapter.from_pretrained(tmp_path)
    tokens = torch.randint(1, 100, (2, 8))
    assert torch.equal(loaded.embed_text(tokens).text_embed, adapter.embed_text(tokens).text_embed)


def test_text_mask_runs_through_first_end_token():
    tokens = torch.tensor([[49406, 320, 49407, 0, 0], [49406, 5, 6, 7, 8]])
    assert text_mask_through_eot(tokens).tolist() == [[True, True, True, False, False], [True] * 5]


# ----------------------------------------------------------------------------- OpenAI layout stand-in
class TinyOpenAILayoutCLIP(nn.Module):
    """The attributes and methods that OpenAI's and open_clip's CLIP classes expose, at toy size."""

    def __init__(self, width: int = 32, embed_dim: int = 16, context: int = 12, resolution: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.token_embedding = nn.Embedding(49408, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 2, width * 2, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, 1)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim))
        self.visual = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.Flatten(), nn.Linear(8 * (resolution // 4) ** 2, embed_dim))
        self.visual.output_dim = embed_dim
        self.visual.input_resolution = resolution
        self.visual.image_size = (resolution, resolution)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        causal = nn.Transformer.generate_square_subsequent_mask(text.shape[1])
        x = self.ln_final(self.transformer(x, mask=causal))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


@pytest.mark.parametrize("adapter_class", [OpenAIClipAdapter, OpenClipAdapter])
def test_openai_layout_adapters_on_a_stand_in_model(adapter_class):
    model = TinyOpenAILayoutCLIP().eval()
    adapter = adapter_class(model=model)
    assert (adapter.dim_latent, adapter.image_size, adapter.max_text_len, adapter.dim_text_encodings) == (16, 16, 12, 32)
    tokens = tokenize(["a photo of a cat", "a dog"], context_length=8)  # shorter than the context: padded to 12
    embedded = adapter.embed_text(tokens)
    padded = F.pad(tokens, (0, 4))
    with torch.no_grad():
        expected = F.normalize(model.encode_text(padded), dim=-1)
    assert torch.allclose(embedded.text_embed, expected, atol=1e-5)
    assert embedded.text_mask.sum(-1).tolist() == [7, 4]
    assert embedded.text_encodings.shape == (2, 12, 32) and (embedded.text_encodings[1, 4:] == 0).all()
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected_image = F.normalize(model.encode_image((images - MEAN) / STD), dim=-1)
    assert torch.allclose(adapter.embed_image(images).image_embed, expected_image, atol=1e-5)
    with pytest.raises(TypeError, match="cannot save"):
        adapter.config  # a model given as an object cannot be written to JSON


@pytest.mark.parametrize("adapter_class, module, extra", [
    (OpenAIClipAdapter, "transformers", "openai-clip"), (OpenClipAdapter, "open_clip", "open-clip"),
    (HFClipAdapter, "transformers", "hf")])
def test_missing_package_names_the_extra(monkeypatch, adapter_class, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=rf"unclip-pytorch\[{extra}\]"):
        adapter_class()


def test_openai_resnets_still_need_the_clip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "clip", None)
    with pytest.raises(ImportError, match=r"clip-anytorch.*ViT-L/14"):
        OpenAIClipAdapter("RN50")


def test_base_adapter_subclass_for_a_custom_clip():
    class Custom(BaseClipAdapter):
        dim_latent, image_size, image_channels, max_text_len = 4, 8, 3, 5

        def _embed_text(self, tokens):
            from dalle2_pytorch.clip.outputs import EmbeddedText
            enc = self.clip(F.one_hot(tokens, 4).float())
            return EmbeddedText(F.normalize(enc.mean(1), dim=-1), enc, tokens != 0)

    adapter = Custom(nn.Linear(4, 4))
    out = adapter.embed_text(torch.randint(0, 4, (2, 9)))
    assert out.text_encodings.shape == (2, 5, 4) and not out.text_embed.requires_grad


# ----------------------------------------------------------------------------- real packages
def _hf_tiny():
    transformers = pytest.importorskip("transformers", reason="optional extra 'hf' (transformers) not installed")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    return transformers.CLIPModel(config).eval()


def _features(output):
    return getattr(output, "pooler_output", output)  # transformers 5 returns an output object, 4 a tensor


@pytest.mark.optional
def test_hf_adapter_matches_get_features():
    model = _hf_tiny()
    adapter = HFClipAdapter(model=model)
    assert (adapter.dim_latent, adapter.image_size, adapter.max_text_len, adapter.image_channels) == (16, 32, 77, 3)
    tokens = tokenize(["a photo of a cat", "a red square on a blue background"])
    embedded = adapter.embed_text(tokens)
    with torch.no_grad():
        expected = F.normalize(_features(model.get_text_features(input_ids=tokens)), dim=-1)
    assert torch.allclose(embedded.text_embed, expected, atol=1e-5)
    assert embedded.text_encodings.shape == (2, 77, 32) and embedded.text_mask.sum(-1).tolist() == [7, 9]
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pixels = (resize_to_square(images, 32) - MEAN) / STD
        expected_image = F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    got = adapter.embed_image(images)
    assert torch.allclose(got.image_embed, expected_image, atol=1e-5)
    assert got.image_encodings.shape == (2, 16, 32)


@pytest.mark.optional
def test_openai_clip_package_adapter():
    openai_clip = pytest.importorskip("clip", reason="OpenAI's clip package (needs torchvision) not installed; its ViTs through transformers: test_openai_adapters.py")
    torch.manual_seed(0)
    model = openai_clip.model.CLIP(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=32,
                                   vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=32,
                                   transformer_heads=2, transformer_layers=1).eval()
    adapter = OpenAIClipAdapter(model=model)
    tokens = tokenize(["a photo of a cat", "a dog"])
    with torch.no_grad():
        expected = F.normalize(model.encode_text(tokens).float(), dim=-1)
        pixels = (torch.rand(2, 3, 32, 32))
        expected_image = F.normalize(model.encode_image((pixels - MEAN) / STD).float(), dim=-1)
    assert torch.allclose(adapter.embed_text(tokens).text_embed, expected, atol=1e-5)
    assert torch.allclose(adapter.embed_image(pixels).image_embed, expected_image, atol=1e-5)
    assert (adapter.dim_latent, adapter.image_size, adapter.max_text_len) == (16, 32, 77)


@pytest.mark.optional
def test_open_clip_package_adapter():
    open_clip = pytest.importorskip("open_clip", reason="the open_clip package (needs torchvision) not installed; open_clip files through transformers: test_openai_adapters.py")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    adapter = OpenClipAdapter(model=model)
    tokens = tokenize(["a photo of a cat", "a dog"])
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(model.encode_text(tokens).float(), dim=-1)
        expected_image = F.normalize(model.encode_image((pixels - MEAN) / STD).float(), dim=-1)
    assert torch.allclose(adapter.embed_text(tokens).text_embed, expected, atol=1e-5)
    assert torch.allclose(adapter.embed_image(pixels).image_embed, expected_image, atol=1e-5)
    assert (adapter.dim_latent, adapter.image_size, adapter.max_text_len) == (16, 32, 77)


def test_builtin_adapter_records_its_arguments_and_round_trips(tmp_path):
    adapter = BuiltinClipAdapter(tiny_clip(), image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.2, 0.2))
    config = adapter.config
    assert list(config) == ["clip", "image_mean", "image_std"]
    assert config["image_mean"] == [0.5, 0.4, 0.3] and config["image_std"] == [0.2, 0.2, 0.2]
    assert BuiltinClipAdapter(tiny_clip()).config["image_mean"] is None
    adapter.save_pretrained(tmp_path)
    loaded = BuiltinClipAdapter.from_pretrained(tmp_path)
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.embed_image(images).image_embed, adapter.embed_image(images).image_embed)

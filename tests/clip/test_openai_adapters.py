"""OpenAIClipAdapter and OpenClipAdapter without torchvision: OpenAI's ViTs through transformers, checked against
OpenAI's forward (tests/clip/test_openai_weights.py) on a tiny random CLIP given in both forms."""

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.clip import openai_weights
from dalle2_pytorch.clip.adapters import OPENAI_IMAGE_MEAN, OPENAI_IMAGE_STD, OpenAIClipAdapter, OpenClipAdapter
from dalle2_pytorch.clip.tokenizer import tokenize
from dalle2_pytorch.hub import loading_checkpoint
from tests.clip.test_openai_weights import TINY, openai_encode_image, openai_encode_text, random_openai_state

transformers = pytest.importorskip("transformers", reason="optional extra 'hf' (transformers) not installed")

MEAN = torch.tensor(OPENAI_IMAGE_MEAN)[:, None, None]
STD = torch.tensor(OPENAI_IMAGE_STD)[:, None, None]


def check_against_openai(adapter, state):
    """The adapter's embeddings are OpenAI's, normalised; text encodings are zero after the end token."""
    tokens = tokenize(["a photo of a cat", "a red square"], context_length=20)  # padded to the full 77
    embedded = adapter.embed_text(tokens)
    expected = F.normalize(openai_encode_text(state, F.pad(tokens, (0, 57))), dim=-1)
    assert (embedded.text_embed - expected).abs().max() < 2e-5
    assert embedded.text_encodings.shape == (2, 77, 128) and (embedded.text_encodings[1, 5:] == 0).all()
    images = torch.rand(2, 3, 48, 40)  # centre-cropped to 40x40, resized to 32 in torch (no torchvision)
    square = F.interpolate(images[:, :, 4:44], size=(32, 32), mode="bicubic", antialias=True)
    got = adapter.embed_image(images)
    assert (got.image_embed - F.normalize(openai_encode_image(state, (square - MEAN) / STD), dim=-1)).abs().max() < 2e-5
    assert got.image_encodings.shape == (2, 16, 128)


@pytest.fixture
def tiny_openai_name(monkeypatch):
    """'ViT-Tiny/8': the tiny architecture registered as if OpenAI had published it."""
    monkeypatch.setitem(openai_weights.OPENAI_ARCHITECTURES, "ViT-Tiny/8", TINY)
    monkeypatch.setitem(openai_weights.OPENAI_HUB_IDS, "ViT-Tiny/8", "openai/clip-vit-tiny-patch8")
    return "ViT-Tiny/8"


def test_a_given_transformers_model_computes_openai_clip():
    state = random_openai_state()
    adapter = OpenAIClipAdapter(model=openai_weights.hf_clip_from_openai_state(state))
    assert (adapter.dim_latent, adapter.image_size, adapter.max_text_len, adapter.dim_text_encodings) == (32, 32, 77, 128)
    check_against_openai(adapter, state)


def test_by_name_loads_openai_weights_through_transformers(monkeypatch, tiny_openai_name):
    state = random_openai_state()
    asked = []

    def from_pretrained(hub_id, *args, **kwargs):
        asked.append(hub_id)
        return openai_weights.hf_clip_from_openai_state(state)

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", from_pretrained)
    check_against_openai(OpenAIClipAdapter(tiny_openai_name), state)
    check_against_openai(OpenClipAdapter("ViT-L-14", pretrained="openai"), state)
    assert asked == ["openai/clip-vit-tiny-patch8", "openai/clip-vit-large-patch14"]
    assert OpenAIClipAdapter(tiny_openai_name).config == {"name": tiny_openai_name}


def test_weights_saved_in_openai_layout_load_into_the_transformers_model(tiny_openai_name):
    """What the adapter saved around the `clip` package (clip.visual.conv1.weight ...) still loads."""
    state = random_openai_state(seed=3)
    with loading_checkpoint():  # architecture only: nothing is downloaded
        adapter = OpenAIClipAdapter(tiny_openai_name)
    adapter.load_state_dict({f"clip.{k}": v for k, v in state.items()})
    check_against_openai(adapter, state)


def test_an_open_clip_checkpoint_file_converts(tmp_path):
    state = random_openai_state(seed=4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "open_clip_pytorch_model.bin")
    adapter = OpenClipAdapter("ViT-Tiny-quickgelu", pretrained=str(tmp_path / "open_clip_pytorch_model.bin"))
    check_against_openai(adapter, state)
    gelu = OpenClipAdapter("ViT-Tiny", pretrained=str(tmp_path / "open_clip_pytorch_model.bin"))
    assert gelu.clip.config.vision_config.hidden_act == "gelu"  # open_clip's non-quickgelu models use GELU
    with loading_checkpoint():  # a file a checkpoint's config names: used if here, never downloaded
        assert OpenClipAdapter("ViT-Tiny", pretrained=str(tmp_path / "open_clip_pytorch_model.bin")).dim_latent == 32
        with pytest.raises(FileNotFoundError, match="downloads nothing that its files name"):
            OpenClipAdapter("ViT-Tiny", pretrained="laion/absent-clip/open_clip_pytorch_model.bin")
    torch.save({"visual.proj": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an open_clip ViT checkpoint"):
        OpenClipAdapter("ViT-Tiny", pretrained=str(tmp_path / "bad.pt"))

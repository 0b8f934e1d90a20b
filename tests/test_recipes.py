"""The all-in-one constructor: DALLE2(dim=..., image_size=..., ...) builds a consistent CLIP + prior + decoder, and
text_encoder_name= conditions its decoder on a Hugging Face text encoder (a tiny random T5 here)."""

from __future__ import annotations

import pytest
import torch

from dalle2_pytorch import DALLE2
from dalle2_pytorch.clip.text_encoder import TextEncoderClipAdapter
from dalle2_pytorch.clip.tokenizer import tokenize
from dalle2_pytorch.recipes import build_unclip
from tests.clip.tiny_t5 import save_tiny_t5

SIZES = dict(dim=16, image_size=16, text_seq_len=8, depth=1, heads=2)


def test_sizes_build_a_consistent_pipeline(tmp_path):
    dalle2 = DALLE2(**SIZES, text_encoder_depth=2, text_decoder_depth=3, decoder_num_samples=2)
    clip = dalle2.prior.clip
    assert (clip.dim_latent, clip.image_size, clip.max_text_len) == (16, 16, 8)
    assert dalle2.decoder.clip.dim_latent == 16 and dalle2.decoder.image_sizes == (16,)
    unet = dalle2.decoder.unets[0]
    assert unet.image_embed_dim == 16 and unet.cond_on_text_encodings and unet.text_embed_dim == 16
    assert (clip.clip.config["text_enc_depth"], clip.clip.config["visual_enc_depth"]) == (2, 1)
    assert dalle2.prior.net.config["depth"] == 3
    assert dalle2.decoder_num_samples == 2
    images = dalle2(["a cat"], steps=2, prior_steps=2, cond_scale=2.0)
    assert images.shape == (1, 3, 16, 16)
    dalle2.save_pretrained(tmp_path)
    loaded = DALLE2.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(dalle2.state_dict().values(), loaded.state_dict().values()))


def test_bigger_sizes_give_bigger_parts():
    small, wide = build_unclip(**SIZES), build_unclip(**dict(SIZES, dim=32))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(wide[0].net) > count(small[0].net) and count(wide[1].unets) > count(small[1].unets)


def test_sizes_and_parts_do_not_mix():
    dalle2 = DALLE2(**SIZES)
    with pytest.raises(TypeError, match="not both"):
        DALLE2(prior=dalle2.prior, decoder=dalle2.decoder, dim=16)
    with pytest.raises(TypeError, match="missing image_size"):
        DALLE2(dim=16)
    with pytest.raises(ValueError, match="divisible by heads"):
        DALLE2(dim=18, image_size=16, heads=4)
    with pytest.raises(ValueError, match="multiple of 8"):
        DALLE2(dim=16, image_size=20)


def test_text_encoder_name_conditions_the_decoder_on_its_hidden_states(tmp_path):
    from transformers import AutoTokenizer, T5EncoderModel

    path = save_tiny_t5(tmp_path / "t5")
    dalle2 = DALLE2(**SIZES, text_encoder_name=path)
    adapter = dalle2.decoder.clip
    assert isinstance(adapter, TextEncoderClipAdapter) and dalle2.prior.clip.dim_text_encodings == 16
    assert adapter.dim_text_encodings == 24 and dalle2.decoder.unets[0].text_embed_dim == 24
    tokens = tokenize(["a cat wearing a hat"], context_length=8)
    text_embed, encodings, mask = adapter.embed_text(tokens)
    ids = AutoTokenizer.from_pretrained(path)(["a cat wearing a hat"], padding="max_length", max_length=8,
                                              return_tensors="pt")
    expected = T5EncoderModel.from_pretrained(path)(**ids).last_hidden_state
    assert torch.allclose(encodings, expected, atol=1e-6) and mask.sum() == 5
    assert torch.allclose(text_embed, dalle2.prior.clip.embed_text(tokens)[0])
    assert dalle2(["a cat wearing a hat"], steps=2, prior_steps=2).shape == (1, 3, 16, 16)
    dalle2.save_pretrained(tmp_path / "pipeline")
    loaded = DALLE2.from_pretrained(tmp_path / "pipeline")
    assert isinstance(loaded.decoder.clip, TextEncoderClipAdapter)
    assert torch.allclose(loaded.decoder.clip.embed_text(tokens)[1], encodings)

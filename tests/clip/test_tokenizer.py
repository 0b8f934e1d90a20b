"""The CLIP BPE tokenizer: OpenAI ids, padding/truncation, round trips, a second implementation."""

import gzip

import pytest
import torch

from dalle2_pytorch.clip import tokenizer as tokenizer_module
from dalle2_pytorch.clip.tokenizer import (DEFAULT_MERGES_PATH, NUM_MERGES, CLIPTokenizer, clean_text,
                                           default_tokenizer, tokenize)

# ids published with OpenAI CLIP / known from its tokenizer
KNOWN_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "a dog": [320, 1929],
    "a red square": [320, 736, 3999],
    "Hello, World!": [3306, 267, 1002, 256],
}

MIXED_STRINGS = [
    "a photo of a cat",
    "Hello, World! It's 2024 & naïve café 😀",
    "  multiple   spaces\tand\nnewlines ",
    "don't you'll we've I'M",
    "x²½ ٣ 日本語のテキスト",
    "Ünïcödé SHOUTING!!! ... ??",
    "glistening morning dew on a flower petal",
    "<|startoftext|>special tokens<|endoftext|>",
]


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return default_tokenizer()


def test_vocabulary_and_special_ids(tok):
    assert tok.vocab_size == 49408
    assert tok.sot_token_id == 49406 and tok.eot_token_id == 49407
    assert tok.encoder["<|startoftext|>"] == 49406


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_known_openai_ids(tok, text):
    assert tok.encode(text) == KNOWN_IDS[text]


def test_tokenize_pads_with_zeros_and_wraps_in_start_end():
    out = tokenize(["a photo of a cat", "a dog"], context_length=10)
    assert out.dtype == torch.long and out.shape == (2, 10)
    assert out[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, 0]
    assert out[1].tolist() == [49406, 320, 1929, 49407, 0, 0, 0, 0, 0, 0]
    bare = tokenize("a dog", context_length=4, add_start_end=False)
    assert bare.tolist() == [[320, 1929, 0, 0]]


def test_too_long_raises_unless_truncate():
    text = "a photo of a cat " * 30
    with pytest.raises(ValueError, match="context_length=77"):
        tokenize(text)
    cut = tokenize(text, truncate=True)
    assert cut.shape == (1, 77) and cut[0, 0] == 49406 and cut[0, -1] == 49407 and (cut != 0).all()
    with pytest.raises(ValueError, match="context_length"):
        tokenize("x", context_length=2)


def test_cleaning_lowercases_unescapes_and_collapses_whitespace(tok):
    assert clean_text("  A &amp;amp; B \n\t C ") == "A & B C"
    assert tok.encode("A PHOTO   of a\nCAT") == tok.encode("a photo of a cat")
    assert tok.encode("cats &amp; dogs") == tok.encode("cats & dogs")


@pytest.mark.parametrize("text", MIXED_STRINGS[:7])
def test_decode_inverts_encode(tok, text):
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids)) == ids
    assert tok.decode(tokenize(text)[0]) == tok.decode(ids)


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(ValueError, match="49408"):
        tok.decode([320, 49408])


def test_encode_rejects_non_strings(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(123)


def test_module_level_default_tokenizer_is_lazy_and_shared():
    from dalle2_pytorch.clip.tokenizer import tokenizer
    assert tokenizer is default_tokenizer() is tokenizer_module.tokenizer


def test_matches_hugging_face_tokenizer_built_from_the_same_merges(tok):
    transformers = pytest.importorskip("transformers", reason="second implementation (optional extra 'hf')")
    with gzip.open(DEFAULT_MERGES_PATH, "rt", encoding="utf-8") as handle:
        merges = [tuple(line.split()) for line in handle.read().split("\n")[1:NUM_MERGES + 1]]
    hf = transformers.CLIPTokenizer(vocab=dict(tok.encoder), merges=merges)
    for text in MIXED_STRINGS:
        assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
    assert tokenize("a cat")[0, :4].tolist() == hf("a cat")["input_ids"]

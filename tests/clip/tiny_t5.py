"""A tiny random T5 encoder and word-level tokenizer saved to a folder, loadable by path (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["<pad>", "<unk>", "</s>", "a", "cat", "wearing", "hat", "painting", "of", "the", "sunset", "over", "ocean",
         "drinking", "milk", "in", "style", "van", "gogh"]


def save_tiny_t5(directory: Path, d_model: int = 24) -> str:
    """Write the model and its tokenizer into ``directory``; returns the path to pass as ``text_encoder_name``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                            eos_token="</s>").save_pretrained(directory)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(directory)
    return str(directory)

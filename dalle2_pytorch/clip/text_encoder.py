"""A CLIP whose text encodings come from a Hugging Face text encoder (T5, as Imagen conditions on), for a decoder.

    adapter = TextEncoderClipAdapter(clip, "google/t5-v1_1-base")
    decoder = Decoder(unet=Unet(dim=128), clip=adapter, image_sizes=256, condition_on_text_encodings=True)

The adapter behaves like the CLIP it wraps (image embeddings, text embeddings, image size, text length), except
that ``embed_text`` returns the text encoder's last hidden states as the text encodings (width
``dim_text_encodings`` = the encoder's hidden size) with their attention mask.  It takes the CLIP's token ids like
every adapter, so datasets, trainers and ``DALLE2`` pass the same tokens to it as to the prior: the ids are decoded
back to strings with the CLIP tokenizer and tokenized again by the encoder's own tokenizer.  Needs the ``hf`` extra
(``transformers``); the encoder is frozen.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from dalle2_pytorch.clip.adapters import BaseClipAdapter, to_clip_adapter
from dalle2_pytorch.clip.pretrained import import_optional
from dalle2_pytorch.init_config import register_to_config
from dalle2_pytorch.serialization import PretrainedMixin


def load_text_encoder(name: str) -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) of a Hugging Face model name or local folder; the encoder half of an encoder-decoder
    model (T5) is kept."""
    transformers = import_optional("transformers", "TextEncoderClipAdapter", "hf", "transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    config = transformers.AutoConfig.from_pretrained(name)
    # on the meta device (a checkpoint's size check counts parameters without allocating) only the shapes matter
    shapes_only = torch.empty(0).device.type == "meta"
    if config.model_type in ("t5", "mt5", "umt5"):  # T5 checkpoints, whole or encoder-only
        model_class = transformers.T5EncoderModel
    else:
        model_class = transformers.AutoModel
    if not shapes_only:
        encoder = model_class.from_pretrained(name)
    elif model_class is transformers.AutoModel:
        encoder = transformers.AutoModel.from_config(config)
    else:
        encoder = model_class(config)
    if model_class is not transformers.T5EncoderModel and getattr(config, "is_encoder_decoder", False):
        encoder = encoder.get_encoder()
    return tokenizer, encoder


class TextEncoderClipAdapter(PretrainedMixin, BaseClipAdapter):
    """``clip`` (a CLIP or adapter) with text encodings from the Hugging Face encoder ``text_encoder_name``.

    Args:
        clip: the CLIP that embeds images and texts (a dalle2_pytorch ``CLIP`` or any ``BaseClipAdapter``).
        text_encoder_name: a Hugging Face model name (``'t5-large'``, ``'google/t5-v1_1-base'``) or a local folder
            holding the model and its tokenizer.
        max_encoder_len: the encoder's tokens per text (longer texts are cut; default the CLIP's text length).
    """

    @register_to_config
    def __init__(self, clip: Any, text_encoder_name: str, max_encoder_len: Optional[int] = None) -> None:
        inner = to_clip_adapter(clip)
        if not isinstance(text_encoder_name, str) or not text_encoder_name:
            raise ValueError(f"text_encoder_name={text_encoder_name!r}: expected a Hugging Face model name or folder")
        super().__init__(inner)
        self.tokenizer, self.text_encoder = load_text_encoder(text_encoder_name)
        self.text_encoder.requires_grad_(False)
        self.text_encoder.eval()
        self.max_encoder_len = int(max_encoder_len or inner.max_text_len)

    def train(self, mode: bool = True) -> "TextEncoderClipAdapter":
        super().train(mode)
        self.text_encoder.eval()
        return self

    @property
    def dim_latent(self) -> int:
        return self.clip.dim_latent

    @property
    def dim_text_encodings(self) -> int:
        config = self.text_encoder.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @property
    def image_size(self) -> int:
        return self.clip.image_size

    @property
    def image_channels(self) -> int:
        return self.clip.image_channels

    @property
    def max_text_len(self) -> int:
        return self.clip.max_text_len

    def _embed_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from dalle2_pytorch.clip.tokenizer import default_tokenizer

        clip_tokenizer = default_tokenizer()
        texts = [clip_tokenizer.decode(row) for row in tokens.cpu()]
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_encoder_len,
                               return_tensors="pt").to(tokens.device)
        hidden = self.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"].bool()
        text_embed = self.clip.embed_text(tokens)[0]
        return text_embed, hidden.last_hidden_state.float(), mask

    def embed_image(self, images: torch.Tensor) -> Any:
        """The wrapped CLIP's image embedding (it resizes and normalises the images itself)."""
        return self.clip.embed_image(images)

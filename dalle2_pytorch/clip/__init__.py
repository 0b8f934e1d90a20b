"""CLIP: the BPE tokenizer, a trainable CLIP, and adapters that give the prior and decoder one interface.

* :mod:`.tokenizer` - OpenAI CLIP's byte-level BPE (``tokenize``, ``CLIPTokenizer``, lazily built ``tokenizer``);
* :mod:`.model` - :class:`CLIP` with x-clip's constructor keywords (FILIP, DCL, CLOOB projection, MLM, SimCLR/SimSiam);
* :mod:`.adapters` - :class:`BaseClipAdapter` and adapters for our CLIP, OpenAI CLIP, open_clip and Hugging Face;
* :mod:`.text_encoder` - :class:`TextEncoderClipAdapter`: a CLIP whose text encodings come from a Hugging Face
  text encoder such as T5 (``transformers`` is imported only when one is built).
"""

from dalle2_pytorch.clip.adapters import (BaseClipAdapter, BuiltinClipAdapter, HFClipAdapter, OpenAIClipAdapter,
                                          OpenClipAdapter, to_clip_adapter)
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.outputs import EmbeddedImage, EmbeddedText
from dalle2_pytorch.clip.text_encoder import TextEncoderClipAdapter
from dalle2_pytorch.clip.tokenizer import CLIPTokenizer, default_tokenizer, tokenize

__all__ = ["CLIP", "CLIPTokenizer", "tokenize", "default_tokenizer", "BaseClipAdapter", "BuiltinClipAdapter",
           "OpenAIClipAdapter", "OpenClipAdapter", "HFClipAdapter", "TextEncoderClipAdapter", "to_clip_adapter", "EmbeddedText", "EmbeddedImage"]

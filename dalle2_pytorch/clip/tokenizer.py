"""The CLIP byte-level BPE tokenizer (OpenAI token ids, vocabulary 49,408).

Text is cleaned (``ftfy.fix_text`` when ftfy is installed, otherwise Unicode NFC normalisation;
HTML entities unescaped twice; runs of whitespace collapsed), lower-cased, split into words with
CLIP's pattern, mapped byte by byte onto printable characters and merged with the published BPE
merges (``data/bpe_simple_vocab_16e6.txt.gz``, released with OpenAI CLIP under the MIT licence).
The ids are those of OpenAI CLIP and open_clip: ``<|startoftext|>`` is 49406, ``<|endoftext|>``
49407, and 0 (the token ``!``) doubles as padding in :meth:`CLIPTokenizer.tokenize`.

The word-splitting pattern needs the Unicode classes "letter" and "number", which the standard
``re`` module lacks; they are built once from :mod:`unicodedata` (about 0.2 s) when the first
tokenizer is made, so no third-party regex package is needed.
"""

from __future__ import annotations

import gzip
import html
import re
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

DEFAULT_MERGES_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 256 * 2 - 2  # byte symbols, byte symbols ending a word, two specials
WORD_END = "</w>"

try:  # ftfy repairs mojibake; without it we fall back to NFC normalisation, documented above
    import ftfy as _ftfy
except ImportError:  # pragma: no cover - depends on the environment
    _ftfy = None


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values onto a printable character (CLIP's/GPT-2's table).

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes map to code points 256+.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _ranges_class(code_points: list[int]) -> str:
    """A regex character class body (``a-z...``) covering the sorted ``code_points``."""
    parts: list[str] = []
    start = prev = code_points[0]
    for cp in code_points[1:] + [-2]:
        if cp != prev + 1:
            parts.append(re.escape(chr(start)) if start == prev else f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
            start = cp
        prev = cp
    return "".join(parts)


@lru_cache(maxsize=1)
def word_pattern() -> re.Pattern[str]:
    """CLIP's split pattern: specials, English contractions, letter runs, single digits, symbol runs."""
    letters, numbers = [], []
    for cp in range(sys.maxunicode + 1):
        major = unicodedata.category(chr(cp))[0]
        if major == "L":
            letters.append(cp)
        elif major == "N":
            numbers.append(cp)
    letter, number = _ranges_class(letters), _ranges_class(numbers)
    return re.compile(
        rf"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[{letter}]+|[{number}]|[^\s{letter}{number}]+",
        re.IGNORECASE,
    )


def clean_text(text: str) -> str:
    """Repair, unescape and whitespace-normalise ``text`` the way CLIP does before tokenising."""
    text = _ftfy.fix_text(text) if _ftfy is not None else unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class CLIPTokenizer:
    """Byte-level BPE with OpenAI CLIP's merges and ids.

    >>> tok = CLIPTokenizer()
    >>> tok.encode("a photo of a cat")
    [320, 1125, 539, 320, 2368]
    """

    def __init__(self, merges_path: str | Path = DEFAULT_MERGES_PATH) -> None:
        with gzip.open(merges_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(pair) != 2 for pair in merges):
            raise ValueError(f"{merges_path} does not look like CLIP's merges file ({len(merges)} merges read)")
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + WORD_END for s in symbols] + ["".join(pair) for pair in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.pattern = word_pattern()
        self._cache = {START_OF_TEXT: START_OF_TEXT, END_OF_TEXT: END_OF_TEXT}
        self.vocab_size = len(vocab)
        self.sot_token_id = self.encoder[START_OF_TEXT]
        self.eot_token_id = self.encoder[END_OF_TEXT]
        self.pad_token_id = 0

    def bpe(self, word: str) -> str:
        """Merge the characters of one (byte-mapped) word; returns space-separated BPE tokens."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + WORD_END]
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, float("inf")))
            if best not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = " ".join(parts)
        if len(self._cache) < 100_000:
            self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = []
        for word in self.pattern.findall(clean_text(text).lower()):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Text of ``ids``; padding (trailing zeros after an end token) and specials are dropped when ``skip_special``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if skip_special:
            if self.eot_token_id in ids:
                ids = ids[:ids.index(self.eot_token_id)]
            ids = [i for i in ids if i not in (self.sot_token_id, self.eot_token_id)]
        bad = [i for i in ids if i not in self.decoder]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        pieces = []
        for token in (self.decoder[i] for i in ids):
            if token in (START_OF_TEXT, END_OF_TEXT):
                pieces.append(token.encode("utf-8"))
                continue
            ends_word = token.endswith(WORD_END)
            body = token[: -len(WORD_END)] if ends_word else token
            pieces.append(bytes(self.byte_decoder[ch] for ch in body) + (b" " if ends_word else b""))
        return b"".join(pieces).decode("utf-8", errors="replace").strip()

    def tokenize(self, texts: str | Sequence[str], context_length: int = 77, truncate: bool = False,
                 add_start_end: bool = True) -> torch.Tensor:
        """Encode ``texts`` into a ``(len(texts), context_length)`` LongTensor padded with 0.

        ``add_start_end`` wraps each text in 49406 ... 49407 as OpenAI CLIP expects (the adapters pool at
        the end token). A text that does not fit raises ``ValueError`` unless ``truncate``, which cuts it
        and keeps the end token last.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(context_length, int) or context_length < (3 if add_start_end else 1):
            raise ValueError(f"context_length must be an int >= {3 if add_start_end else 1}, got {context_length!r}")
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if add_start_end:
                ids = [self.sot_token_id, *ids, self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {row} ({text[:40]!r}...) is {len(ids)} tokens long, more than context_length="
                        f"{context_length}; pass truncate=True to cut it")
                ids = ids[:context_length]
                if add_start_end:
                    ids[-1] = self.eot_token_id
            result[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    def __call__(self, texts: str | Sequence[str], context_length: int = 77, truncate: bool = False,
                 add_start_end: bool = True) -> torch.Tensor:
        return self.tokenize(texts, context_length=context_length, truncate=truncate, add_start_end=add_start_end)


@lru_cache(maxsize=1)
def default_tokenizer() -> CLIPTokenizer:
    """The shared tokenizer over the packaged merges, built on first use."""
    return CLIPTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = False,
             add_start_end: bool = True) -> torch.Tensor:
    """:meth:`CLIPTokenizer.tokenize` with the shared default tokenizer."""
    return default_tokenizer().tokenize(texts, context_length=context_length, truncate=truncate,
                                        add_start_end=add_start_end)


def __getattr__(name: str):
    # ``from dalle2_pytorch.clip.tokenizer import tokenizer`` builds the default tokenizer lazily
    if name == "tokenizer":
        return default_tokenizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Inputs shared by the decoder tests (the tiny models themselves are in tests/factories.py)."""

import torch

from tests.factories import EMBED_DIM, TEXT_DIM, tiny_decoder, tiny_unet  # noqa: F401 (used by the decoder tests)


def images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def embeds(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, EMBED_DIM, generator=torch.Generator().manual_seed(seed))


def text_encodings(batch: int = 2, length: int = 5, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, length, TEXT_DIM, generator=torch.Generator().manual_seed(seed))

"""Reproducible Gaussian noise: one generator for a batch, or one generator per batch row.

Every random draw of sampling goes through :func:`randn`.  With a :class:`RowGenerators` in place
of a ``torch.Generator``, row ``r`` of the batch (a block of ``shape[0] // len(rows)`` leading rows,
for draws of several candidates per row) comes from generator ``r``, exactly what the same call
with a batch of one would have drawn.  A server can then batch requests without a request's images
depending on its neighbours (``dalle2 serve``).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from dalle2_pytorch.validation import check_seed


class RowGenerators:
    """Per-row generators for a batch of ``len(generators)`` rows (all on one device)."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError("generators must be a non-empty sequence of torch.Generator")
        devices = {str(g.device) for g in generators}
        if len(devices) != 1:
            raise ValueError(f"generators must share one device, got {sorted(devices)}")
        self.generators = generators
        self.device = generators[0].device

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device: torch.device | str = "cpu") -> "RowGenerators":
        return cls([torch.Generator(device=device).manual_seed(check_seed(f"seeds[{i}]", seed))
                    for i, seed in enumerate(seeds)])

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
        rows = len(self.generators)
        if len(shape) == 0 or shape[0] % rows != 0:
            raise ValueError(f"a per-row draw needs a leading dimension divisible by the {rows} rows; "
                             f"got shape {tuple(shape)}")
        block = (shape[0] // rows, *shape[1:])
        return torch.cat([torch.randn(block, generator=g, device=self.device, dtype=dtype) for g in self.generators])


Generator = Union[torch.Generator, RowGenerators, None]


def randn(shape: Sequence[int], *, generator: Generator = None, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn on the generator's device (reproducible), then moved to ``device``."""
    if isinstance(generator, RowGenerators):
        return generator.randn(tuple(shape), dtype=dtype).to(device)
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)

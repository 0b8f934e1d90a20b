"""Splitting a batch into chunks of at most ``max_batch_size`` rows.

Used for gradient accumulation (each chunk's mean loss is weighted by its share of the batch, so
the summed gradient equals the gradient of the whole batch's mean loss) and for sampling large
batches in pieces.  Every argument whose first dimension is the batch size is split: tensors,
numpy arrays and lists/tuples (e.g. captions); anything else (numbers, flags) goes to every chunk.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch


def _rows(value: Any) -> int | None:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return int(value.shape[0]) if value.ndim > 0 else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def infer_batch_size(args: tuple, kwargs: dict[str, Any]) -> int:
    """Rows of the first tensor (or array) among the arguments."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0:
            return int(value.shape[0])
    raise ValueError("cannot split this batch: no tensor argument gives the batch size")


def check_max_batch_size(max_batch_size: Any) -> None:
    if max_batch_size is None:
        return
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size={max_batch_size!r}: expected a positive int or None")


def split_batch(args: tuple, kwargs: dict[str, Any], max_batch_size: int | None,
                batch_size: int | None = None) -> Iterator[tuple[float, tuple, dict[str, Any]]]:
    """Yield ``(fraction, chunk_args, chunk_kwargs)``; the fractions sum to 1.

    Without ``max_batch_size`` (or when the batch fits) the arguments come back unchanged, once.
    """
    check_max_batch_size(max_batch_size)
    if max_batch_size is None:
        yield 1.0, args, kwargs
        return
    if batch_size is None:
        batch_size = infer_batch_size(args, kwargs)
    if batch_size <= max_batch_size:
        yield 1.0, args, kwargs
        return

    def cut(value: Any, start: int, stop: int) -> Any:
        return value[start:stop] if _rows(value) == batch_size else value

    for start in range(0, batch_size, max_batch_size):
        stop = min(start + max_batch_size, batch_size)
        yield ((stop - start) / batch_size, tuple(cut(a, start, stop) for a in args),
               {k: cut(v, start, stop) for k, v in kwargs.items()})


def sample_in_chunks(sample_fn: Callable[..., torch.Tensor], args: tuple, kwargs: dict[str, Any],
                     max_batch_size: int | None, batch_size: int | None = None) -> torch.Tensor:
    """Call ``sample_fn`` on chunks of the batch and concatenate the outputs along dim 0.

    ``batch_size`` is for samplers without batched inputs (unconditional decoders): each call then
    gets ``batch_size=<chunk rows>``.
    """
    check_max_batch_size(max_batch_size)
    if batch_size is not None:
        if max_batch_size is None or batch_size <= max_batch_size:
            return sample_fn(*args, batch_size=batch_size, **kwargs)
        outputs = []
        for start in range(0, batch_size, max_batch_size):
            rows = min(max_batch_size, batch_size - start)
            outputs.append(sample_fn(*args, batch_size=rows, **kwargs))
        return torch.cat(outputs, dim=0)
    chunks = [sample_fn(*a, **k) for _, a, k in split_batch(args, kwargs, max_batch_size)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)

"""What every process of a run must agree on: how many batches to take from streams of different lengths, and the
values (validation loss and metrics) that decisions such as ``best/`` are taken on."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch


def agreed(batches: Iterable[dict[str, Any]], accelerator) -> Iterator[dict[str, Any]]:
    """``batches`` for as long as every process still has one.  Shards hold different numbers of samples
    (img2dataset's failed downloads), and a process that ran out while another went on would leave it waiting forever
    in the next collective (a gradient average, an FSDP all-gather).  One ``all_reduce`` per batch, so every process
    must iterate this at the same point; with one process, ``batches`` as they are."""
    iterator = iter(batches)
    if accelerator.num_processes == 1:
        yield from iterator
        return
    import torch.distributed as dist

    while True:
        batch = next(iterator, None)
        available = torch.tensor([0 if batch is None else 1], device=accelerator.device)
        dist.all_reduce(available, op=dist.ReduceOp.MIN)
        if not int(available.item()):
            return
        yield batch


def mean_over_ranks(local: dict[str, tuple[float, float]], accelerator) -> dict[str, float]:
    """Each value's mean over the processes, weighted: ``local`` maps a name to this process's (value, weight), e.g.
    (validation loss, validation rows).  A name a process lacks counts there with weight 0.  Every process gets the
    very same floats (the parts are gathered and added up in rank order), so decisions taken on them agree; with one
    process the values as they are.  A collective: every process must call it at the same point."""
    if accelerator.num_processes == 1:
        return {key: value for key, (value, _) in local.items()}
    from accelerate.utils import gather_object

    totals: dict[str, tuple[float, float]] = {}
    for part in gather_object([local]):
        for key, (value, weight) in part.items():
            total, weights = totals.get(key, (0.0, 0.0))
            totals[key] = (total + value * weight, weights + weight)
    return {key: total / weights for key, (total, weights) in sorted(totals.items()) if weights > 0}

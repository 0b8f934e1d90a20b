"""Diffusion-prior training data: clip-retrieval embedding folders as (text embedding, image embedding) pairs.

clip-retrieval writes ``img_emb/img_emb_0.npy, img_emb_1.npy, ...``, ``text_emb/text_emb_0.npy, ...`` (row ``i`` of
both describes the same pair) and ``metadata/metadata_0.parquet, ...`` (one row per pair, with a ``caption``
column).  clip-retrieval pads ``<n>`` to the digits of its partition count (``_0`` with one partition, ``_00`` ..
``_19`` with twenty) and stores float16 rows; batches come back as float32.  Rows holding NaN or inf are dropped
from their batch and counted (``nonfinite_rows``) with a warning naming the file and row; files whose widths
differ from the first file's (or from ``embed_dim``) are an error.  The .npy files are memory-mapped, so only the
rows a batch needs are read.  Splits are contiguous
index ranges by fraction; each rank reads an equal contiguous part of its split; the loader's position
(epoch, samples consumed) is saved and restored for exact resume.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist

from dalle2_pytorch.errors import BadDataError

_NUMBER = re.compile(r"(\d+)")


def _numbered_files(folder: Path, suffix: str) -> list[Path]:
    """Files in ``folder`` ending with ``suffix``, ordered by the last number in their names (0, 1, ..., 10)."""
    def number(path: Path) -> tuple[int, str]:
        found = _NUMBER.findall(path.stem)
        return (int(found[-1]) if found else -1, path.name)
    return sorted((p for p in folder.iterdir() if p.name.endswith(suffix)), key=number)


def load_embedding_file(path: Path) -> np.ndarray:
    """Memory-map one ``.npy`` file; a truncated file or one holding Python objects is a BadDataError naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadDataError(f"{path}: not a readable embedding file ({error}); re-create it (clip-retrieval writes "
                           "2-d float arrays with numpy.save)") from error


class ClipRetrievalEmbeddings:
    """Memory-mapped image (and optional text) embeddings, plus optional captions, indexed 0..len-1 across files.

    image_embeddings / text_embeddings: folders of numbered ``.npy`` files with matching row counts.
    metadata: folder of numbered ``.parquet`` files with a ``caption`` column (needs pyarrow).
    embed_dim: the width every row must have (the model's); None: the first image file's width.
    """

    def __init__(self, *, image_embeddings: str | Path, text_embeddings: str | Path | None = None,
                 metadata: str | Path | None = None, embed_dim: int | None = None) -> None:
        self.embed_dim = embed_dim
        self.image_files = self._files("image_embeddings", image_embeddings, ".npy")
        self.images = [load_embedding_file(path) for path in self.image_files]
        self._check_widths(self.image_files, self.images)
        counts = [len(array) for array in self.images]
        if not sum(counts):
            raise ValueError(f"image_embeddings={str(image_embeddings)!r}: its files "
                             f"{[p.name for p in self.image_files][:8]} hold no rows")
        self.texts = None
        self.text_files: list[Path] = []
        if text_embeddings is not None:
            self.text_files = self._files("text_embeddings", text_embeddings, ".npy")
            self.texts = [load_embedding_file(path) for path in self.text_files]
            self._check_widths(self.text_files, self.texts)
            self._check_counts("text_embeddings", self.text_files, [len(array) for array in self.texts], counts)
        self.caption_files = None
        if metadata is not None:
            try:
                import pyarrow.parquet as parquet
            except ImportError as error:
                raise ValueError("metadata= (parquet captions) needs pyarrow: pip install pyarrow") from error
            self.caption_files = self._files("metadata", metadata, ".parquet")
            rows = [parquet.ParquetFile(path).metadata.num_rows for path in self.caption_files]
            self._check_counts("metadata", self.caption_files, rows, counts)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._caption_cache: dict[int, list[str]] = {}
        self.nonfinite_rows = 0

    @classmethod
    def from_folder(cls, root: str | Path, *, text: bool = True, captions: bool = False,
                    embed_dim: int | None = None) -> "ClipRetrievalEmbeddings":
        """Read clip-retrieval's standard layout ``root/{img_emb,text_emb,metadata}``."""
        root = Path(root)
        return cls(image_embeddings=root / "img_emb", text_embeddings=root / "text_emb" if text else None,
                   metadata=root / "metadata" if captions else None, embed_dim=embed_dim)

    @staticmethod
    def _files(name: str, folder: str | Path, suffix: str) -> list[Path]:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{name}={str(folder)!r} is not a directory")
        files = _numbered_files(folder, suffix)
        if not files:
            raise ValueError(f"{name}={str(folder)!r} holds no {suffix} files")
        return files

    def _check_widths(self, files: list[Path], arrays: list[np.ndarray]) -> None:
        """Every file 2-d numbers, as wide as the first image file and as ``embed_dim``: one error naming the file."""
        for path, array in zip(files, arrays):
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                raise BadDataError(f"{path} holds {array.dtype} values; embeddings must be numbers (float16/32 rows, "
                                   "as clip-retrieval writes them): re-create the file")
            if array.ndim != 2:
                raise ValueError(f"{path} must hold a 2-d array (rows, width), got shape {array.shape}")
            if self.embed_dim is not None:
                reference, source = self.embed_dim, "the model's embed_dim"
            else:  # the first image file, checked 2-d first
                reference, source = self.images[0].shape[1], str(self.image_files[0])
            if array.shape[1] != reference:
                raise ValueError(f"{path} has rows of width {array.shape[1]} (shape {array.shape}) but {source} "
                                 f"has width {reference}")

    def _check_counts(self, name: str, files: list[Path], counts: list[int], expected: list[int]) -> None:
        numbers = [_NUMBER.findall(p.stem)[-1:] for p in files]
        if [int(n[0]) if n else -1 for n in numbers] != \
                [int(n[0]) if n else -1 for n in (_NUMBER.findall(p.stem)[-1:] for p in self.image_files)]:
            raise ValueError(f"{name}: files {[p.name for p in files][:8]} are not numbered like the image "
                             f"embeddings {[p.name for p in self.image_files][:8]}")
        if counts != expected:
            raise ValueError(f"{name}: row counts per file {counts} ({[p.name for p in files]}) do not match the "
                             f"image embeddings' {expected} ({[p.name for p in self.image_files]})")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.images[0].shape[1])

    def _gather(self, arrays: list[np.ndarray], indices: np.ndarray) -> torch.Tensor:
        """Rows ``indices`` (global) from numbered arrays, reading each file's rows in ascending order."""
        file_ids = np.searchsorted(self.offsets, indices, side="right") - 1
        out = np.empty((len(indices), arrays[0].shape[1]), dtype=np.float32)
        for file_id in np.unique(file_ids):
            where = np.flatnonzero(file_ids == file_id)
            local = indices[where] - self.offsets[file_id]
            order = np.argsort(local)
            out[where[order]] = arrays[file_id][local[order]]
        return torch.from_numpy(out)

    def _captions(self, indices: np.ndarray) -> list[str]:
        import pyarrow.parquet as parquet
        file_ids = np.searchsorted(self.offsets, indices, side="right") - 1
        result = []
        for index, file_id in zip(indices.tolist(), file_ids.tolist()):
            if file_id not in self._caption_cache:
                if len(self._caption_cache) >= 2:
                    self._caption_cache.pop(next(iter(self._caption_cache)))
                table = parquet.read_table(self.caption_files[file_id], columns=["caption"])
                self._caption_cache[file_id] = [str(c) if c is not None else "" for c in table["caption"].to_pylist()]
            result.append(self._caption_cache[file_id][index - int(self.offsets[file_id])])
        return result

    def location(self, index: int, text: bool = False) -> tuple[Path, int]:
        """(image file, or text file with ``text``, and the row in it) of global row ``index``."""
        file_id = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return (self.text_files if text else self.image_files)[file_id], int(index - self.offsets[file_id])

    def batch(self, indices: np.ndarray | list[int]) -> dict[str, Any]:
        """``{"image_embed": (B, d)[, "text_embed": (B, d)][, "caption": [B str]]}`` for global ``indices``.

        Rows whose image or text embedding holds NaN or inf are left out (so B can be smaller than
        ``len(indices)``), counted in ``nonfinite_rows`` and warned about with their file and row."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)})")
        out: dict[str, Any] = {"image_embed": self._gather(self.images, indices)}
        if self.texts is not None:
            out["text_embed"] = self._gather(self.texts, indices)
        finite_by_kind = {key: value.isfinite().all(dim=1) for key, value in out.items()}
        finite = torch.stack(list(finite_by_kind.values())).all(dim=0)
        if not finite.all():
            for position in torch.nonzero(~finite).flatten().tolist():
                self.nonfinite_rows += 1
                where = [self.location(int(indices[position]), text=key == "text_embed")
                         for key, ok in finite_by_kind.items() if not ok[position]]
                named = " and ".join(f"row {row} of {path}" for path, row in where)
                warnings.warn(f"embedding {named} holds NaN or inf; left out of its batch "
                              f"(nonfinite_rows={self.nonfinite_rows})", RuntimeWarning, stacklevel=2)
            out = {key: value[finite] for key, value in out.items()}
            indices = indices[finite.numpy()]
        if self.caption_files is not None:
            out["caption"] = self._captions(indices)
        return out


def make_splits(num_samples: int, fractions: Mapping[str, float]) -> dict[str, tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges for named splits, in the order given, e.g.
    ``make_splits(1000, {"train": 0.9, "val": 0.05, "test": 0.05})``
    -> train (0, 900), val (900, 950), test (950, 1000).

    Fractions must be in [0, 1] and sum to 1 (within 1e-6, so 0.7 + 0.2 + 0.1 is accepted)."""
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples={num_samples!r} must be an int >= 0")
    if not fractions:
        raise ValueError("fractions must name at least one split")
    for name, fraction in fractions.items():
        if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"split {name!r} has fraction {fraction!r}; expected a number in [0, 1]")
    total = math.fsum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions {dict(fractions)} sum to {total}, expected 1")
    ranges, cumulative, start = {}, 0.0, 0
    names = list(fractions)
    for position, name in enumerate(names):
        cumulative += fractions[name]
        stop = num_samples if position == len(names) - 1 else min(num_samples, round(cumulative * num_samples))
        ranges[name] = (start, stop)
        start = stop
    return ranges


def rank_range(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """This rank's equal contiguous part of ``[start, stop)``; the remainder (< world_size samples) is dropped so
    every rank runs the same number of steps (DDP would hang otherwise)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    per_rank = (stop - start) // world_size
    return start + rank * per_rank, start + (rank + 1) * per_rank


class PriorEmbeddingLoader:
    """Batches of embedding pairs over ``[start, stop)`` of ``embeddings``, split across ranks, resumable.

    Iterating gives one epoch of dicts from :meth:`ClipRetrievalEmbeddings.batch`.  ``shuffle`` permutes the rank's
    indices with a generator seeded by ``(seed, epoch)``; ``state_dict()`` holds the epoch and the samples consumed,
    so a loader restored with ``load_state_dict`` continues with exactly the batches that were not yet returned.
    """

    def __init__(self, embeddings: ClipRetrievalEmbeddings, *, batch_size: int, start: int = 0,
                 stop: int | None = None, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        stop = len(embeddings) if stop is None else stop
        if not 0 <= start <= stop <= len(embeddings):
            raise ValueError(f"start={start}, stop={stop} must satisfy 0 <= start <= stop <= {len(embeddings)}")
        if rank is None and world_size is None and dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        self.embeddings = embeddings
        self.batch_size = batch_size
        self.start, self.stop = rank_range(start, stop, rank or 0, world_size or 1)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.consumed = 0
        if len(self) == 0:
            raise ValueError(f"rows [{start}, {stop}) of {len(embeddings)} give this rank (rank {rank or 0} of "
                             f"{world_size or 1}) {self.num_samples} samples: no batch of batch_size={batch_size}"
                             f"{' with drop_last' if drop_last else ''}; use more data or a smaller batch_size "
                             f"(files: {[p.name for p in embeddings.image_files][:4]})")

    @property
    def nonfinite_rows(self) -> int:
        """Rows left out so far because they hold NaN or inf (counted by the embeddings, as they are read)."""
        return self.embeddings.nonfinite_rows

    @property
    def num_samples(self) -> int:
        return self.stop - self.start

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.start, self.stop)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.start + torch.randperm(self.num_samples, generator=generator).numpy()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self._order()
        limit = (self.num_samples // self.batch_size) * self.batch_size if self.drop_last else self.num_samples
        while self.consumed < limit:
            indices = order[self.consumed:min(self.consumed + self.batch_size, limit)]
            self.consumed += len(indices)
            yield self.embeddings.batch(indices)
        self.epoch += 1
        self.consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        missing = {"epoch", "consumed", "seed"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed={state['seed']} but this loader has seed={self.seed}")
        if not 0 <= int(state["consumed"]) <= self.num_samples:
            raise ValueError(f"consumed={state['consumed']} is outside this loader's {self.num_samples} samples")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

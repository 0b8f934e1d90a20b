"""Finding the CLIP embedding row of a webdataset sample, in the folder layouts real tools write.

* **Per shard** (embedding-dataset-reordering, ``dalle2 embed``): ``img_emb_<shard number>.npy`` per tar shard, row
  ``i`` for the key ``<shard number><i>``.  The number may have any zero padding: ``img_emb_0.npy``,
  ``img_emb_00000.npy`` and ``img_emb_000000.npy`` all belong to ``00000.tar`` (the reordering tool pads to its
  ``output_shard_width``; ``dalle2 embed`` keeps the shard's own name).  Rows of failed downloads are all zeros.
* **clip-retrieval** (``clip-retrieval inference`` on webdataset input): ``img_emb/img_emb_<n>.npy`` partitions, with
  ``n`` padded to as many digits as the partition count has, in reading order, not key order; the
  ``image_path`` column of ``metadata/metadata_<n>.parquet`` names each row's webdataset key.  Detected when that
  metadata folder sits beside the embedding folder; rows are then looked up by key.

Files are found directly in the given folder or in its ``img_emb/`` (``text_emb/``) subfolder.  Local files are
memory-mapped; float16 rows (what clip-retrieval writes) come back as float32.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .shards import _fsspec, _is_remote, _local_path, load_npy, open_url, shard_name


class EmbeddingShapeError(ValueError):
    """An embedding file or row whose shape does not fit the others or the model (never skipped: fix the data)."""


def list_folder(folder: str) -> list[str] | None:
    """Names of the entries directly in ``folder`` (local path, ``file://`` or fsspec URL); None if no folder."""
    if _is_remote(folder):
        filesystem, path = _fsspec(folder).core.url_to_fs(folder)
        if not filesystem.isdir(path):
            return None
        return sorted(entry.rstrip("/").split("/")[-1] for entry in filesystem.ls(path, detail=False))
    path = Path(_local_path(folder))
    return sorted(entry.name for entry in path.iterdir()) if path.is_dir() else None


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _parent(folder: str) -> str:
    stripped = folder.rstrip("/")
    return stripped.rsplit("/", 1)[0] if "/" in stripped else "."


def numbered_files(folder: str, names: list[str], prefix: str, suffix: str) -> dict[int, str]:
    """``{n: url}`` for the names ``<prefix>_<n><suffix>``; two names with one number (``_0`` and ``_00``) are an
    error, since either could be meant."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)" + re.escape(suffix))
    found: dict[int, str] = {}
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise ValueError(f"{found[number]!r} and {_join(folder, name)!r} both hold {prefix} number {number}; "
                             f"keep one of them")
        found[number] = _join(folder, name)
    return found


class EmbeddingFiles:
    """One kind of embedding (``prefix`` ``img_emb`` or ``text_emb``) under ``folder``: its layout and rows.

    Raises ValueError at once when the folder is missing or holds no ``<prefix>_<n>.npy``, naming what it found.
    embed_dim: the width every row must have (the model's); None: the width of the first file opened.
    """

    def __init__(self, folder: str, prefix: str, *, shard_width: int, embed_dim: int | None = None) -> None:
        self.requested, self.prefix, self.shard_width, self.embed_dim = folder, prefix, shard_width, embed_dim
        names = list_folder(folder)
        if names is None:
            raise ValueError(f"{prefix} embedding folder {folder!r} does not exist")
        self.folder = folder
        self.files = numbered_files(folder, names, prefix, ".npy")
        if not self.files and prefix in names:  # the root of a clip-retrieval output: root/img_emb/img_emb_0.npy
            self.folder = _join(folder, prefix)
            names = list_folder(self.folder) or []
            self.files = numbered_files(self.folder, names, prefix, ".npy")
        self.names = set(names)
        if not self.files and not any(n.startswith(f"{prefix}_") and n.endswith(".npy") for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "nothing"
            raise ValueError(f"no {prefix}_<number>.npy in {folder!r} (nor in its {prefix}/ subfolder); it holds: "
                             f"{shown}")
        self.metadata = self._find_metadata()
        self.layout = "clip_retrieval" if self.metadata else "per_shard"
        self.width: int | None = None
        self._width_source = ""
        self._key_index: Any = None
        self._metadata_rows: dict[int, int] = {}
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()

    def _find_metadata(self) -> dict[int, str]:
        """clip-retrieval's ``metadata/metadata_<n>.parquet`` beside the embedding folder, when there is one."""
        candidate = _join(_parent(self.folder), "metadata")
        names = list_folder(candidate) if _parent(self.folder) != self.folder else None
        metadata = numbered_files(candidate, names or [], "metadata", ".parquet")
        if metadata and set(metadata) != set(self.files):
            raise ValueError(f"{candidate!r} holds metadata_<n>.parquet numbers {sorted(metadata)[:8]} but "
                             f"{self.folder!r} holds {self.prefix}_<n>.npy numbers {sorted(self.files)[:8]}: they "
                             f"must pair (clip-retrieval output). Reordered per-shard embeddings need no metadata: "
                             f"keep them in a folder without a metadata/ folder beside it")
        return metadata

    def describe(self) -> str:
        numbers = sorted(self.files)
        span = f"{self.prefix}_{numbers[0]}..{numbers[-1]}.npy" if numbers else "no numbered files"
        how = (f"clip-retrieval layout, rows matched by key through {_parent(self.folder)}/metadata"
               if self.metadata else f"per-shard layout, row = key digits after shard_width={self.shard_width}")
        return f"{self.requested!r} ({len(numbers)} files {span}; {how})"

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers build their own caches
        state = dict(self.__dict__)
        state["_key_index"], state["_open"] = None, OrderedDict()
        return state

    def peek_width(self) -> None:
        """Take the reference width from the lowest-numbered local file's header (remote files: on first use)."""
        if self.width is None and self.files:
            url = self.files[min(self.files)]
            if not _is_remote(url):
                try:
                    array = load_npy(url)
                except (OSError, ValueError):
                    return  # an unreadable file is reported (and its shard skipped) when it is used
                self._check(url, array)

    def _check(self, url: str, array: np.ndarray) -> None:
        if array.ndim != 2:
            raise EmbeddingShapeError(f"embedding file {url!r} holds an array of shape {array.shape}; "
                                      f"expected (rows, width)")
        width = int(array.shape[1])
        if self.embed_dim is not None and width != self.embed_dim:
            raise EmbeddingShapeError(f"embedding file {url!r} has rows of width {width} (shape {array.shape}) but "
                                      f"the model expects {self.embed_dim}")
        if self.width is None:
            self.width, self._width_source = width, url
        elif width != self.width:
            raise EmbeddingShapeError(f"embedding file {url!r} has rows of width {width} (shape {array.shape}) but "
                                      f"{self._width_source!r}, read first, has width {self.width}")

    def open(self, url: str) -> np.ndarray:
        """The (memory-mapped) array of one file, shape-checked; the last two opened stay cached."""
        if url in self._open:
            self._open.move_to_end(url)
            return self._open[url]
        array = load_npy(url)
        self._check(url, array)
        expected = self.rows_expected(url) if self.layout == "clip_retrieval" else None
        if expected is not None and expected != len(array):
            raise EmbeddingShapeError(f"{url!r} has {len(array)} rows but its metadata file has {expected}: the "
                                      f"embeddings and metadata do not belong together")
        self._open[url] = array
        while len(self._open) > 2:
            self._open.popitem(last=False)
        return array

    def file_for_shard(self, url: str) -> str | None:
        """Per-shard layout: the embedding file of tar shard ``url`` (any zero padding of its number)."""
        shard = shard_name(url)
        if f"{self.prefix}_{shard}.npy" in self.names:
            return _join(self.folder, f"{self.prefix}_{shard}.npy")
        return self.files.get(int(shard)) if shard.isdigit() else None

    def shard_has_file(self, url: str) -> bool:
        return self.layout == "clip_retrieval" or self.file_for_shard(url) is not None

    def locate(self, shard_file: str | None, key: str) -> tuple[str, int] | None:
        """(file, row) holding the embedding of sample ``key``; None when there is none."""
        name = key.split("/")[-1]
        if self.layout == "per_shard":
            return (shard_file, int(name[self.shard_width:])) if shard_file is not None else None
        if self._key_index is None:
            self._key_index = self._build_key_index()
        found = self._key_index.get(key) or self._key_index.get(name)
        if found is None:
            return None
        number, row = found
        return self.files[number], row

    def rows_expected(self, url: str) -> int | None:
        """clip-retrieval layout: the metadata's row count for the file ``url`` (it must match the .npy's)."""
        number = next((n for n, u in self.files.items() if u == url), None)
        return self._metadata_rows.get(number) if number is not None else None

    def _build_key_index(self) -> dict[str, tuple[int, int]]:
        try:
            import pyarrow.parquet as parquet
        except ImportError as error:
            raise ValueError(f"reading clip-retrieval embeddings by key ({self.describe()}) needs pyarrow: "
                             f"pip install pyarrow") from error
        index: dict[str, tuple[int, int]] = {}
        for number, url in sorted(self.metadata.items()):
            with open_url(url) as handle:
                table = parquet.read_table(io.BytesIO(handle.read()))
            if "image_path" not in table.column_names:
                raise ValueError(f"{url!r} has no image_path column (columns: {table.column_names}); clip-retrieval "
                                 f"writes it when it embeds images, and it names each row's webdataset key")
            keys = table.column("image_path").to_pylist()
            self._metadata_rows[number] = len(keys)
            for row, key in enumerate(keys):
                index[str(key)] = (number, row)
        return index

    def row(self, location: tuple[str, int]) -> np.ndarray | None:
        """The float32 row at (file, row); None when the file is shorter or the row is all zeros (no image)."""
        url, row = location
        array = self.open(url)
        if not 0 <= row < len(array):
            return None
        values = np.array(array[row], dtype=np.float32)  # a copy: memory maps are read-only
        return values if values.any() else None  # NaN counts as non-zero: the caller checks finiteness

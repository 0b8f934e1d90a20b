"""Builders for small img2dataset-style shards and clip-retrieval embedding files inside a test's tmp_path."""

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(colour=(200, 30, 30), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """A tar with members ``<key>.<ext>`` for each sample dict ``{"__key__": key, ext: bytes, ...}``."""
    with tarfile.open(path, "w") as archive:
        for sample in samples:
            for extension, data in sample.items():
                if extension == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def row_embedding(shard: int, row: int, dim: int = 8) -> np.ndarray:
    """A recognisable non-zero embedding for (shard, row)."""
    return np.full(dim, shard * 10_000 + row + 1, dtype=np.float32)


def build_img2dataset_shards(root: Path, *, shards: int, rows: list[int], dim: int = 8,
                             in_shard_embeddings: bool = False, text_embeddings: bool = False,
                             image_size=(16, 16)) -> tuple[Path, Path]:
    """``root/shards/{0000..}.tar`` with keys ``<shard:04d><row:04d>`` (jpg + txt = the key) and, unless
    ``in_shard_embeddings``, ``root/emb/img_emb_<shard>.npy`` whose row r is ``row_embedding(shard, r)``."""
    shard_dir, emb_dir = root / "shards", root / "emb"
    shard_dir.mkdir(parents=True, exist_ok=True)
    emb_dir.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        samples = []
        for row in rows:
            key = f"{shard:04d}{row:04d}"
            sample = {"__key__": key, "jpg": jpeg_bytes(size=image_size), "txt": key.encode()}
            if in_shard_embeddings:
                sample["npy"] = npy_bytes(row_embedding(shard, row, dim))
            samples.append(sample)
        write_shard(shard_dir / f"{shard:04d}.tar", samples)
        if not in_shard_embeddings:
            table = np.zeros((max(rows) + 1, dim), dtype=np.float32)
            for row in rows:
                table[row] = row_embedding(shard, row, dim)
            np.save(emb_dir / f"img_emb_{shard:04d}.npy", table)
            if text_embeddings:
                np.save(emb_dir / f"text_emb_{shard:04d}.npy", -table)
    return shard_dir, emb_dir

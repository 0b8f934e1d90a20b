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


# --- The exact layouts the real tools write (checked against their sources; see docs/data.md) -------------------

def img2dataset_key(shard: int, index: int, shard_digits: int = 5, index_digits: int = 4) -> str:
    """img2dataset's key: the shard id in ``ceil(log10(shard count))`` digits (5 by default), then the sample's index
    in the shard in ``ceil(log10(number_sample_per_shard))`` digits (4 for 10,000): ``000010509``."""
    return f"{shard:0{shard_digits}d}{index:0{index_digits}d}"


def key_embedding(shard: int, index: int, dim: int = 8) -> np.ndarray:
    """A recognisable float16 embedding (exact in float16) for the sample ``index`` of ``shard``."""
    return np.full(dim, shard * 64 + index + 1, dtype=np.float16)


def write_img2dataset_shard(folder: Path, shard: int, indices: list[int], *, failed: tuple[int, ...] = (),
                            shard_digits: int = 5) -> list[str]:
    """``folder/<shard:05d>.tar`` as img2dataset writes it with webdataset's TarWriter (members per sample in sorted
    extension order, ``jpg json txt``, mode 0o444), plus ``<shard>.parquet`` (one row per input URL, failed ones
    included, with ``status``) and ``<shard>_stats.json``.  Samples in ``failed`` are in the parquet only.
    Returns the keys written to the tar."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    name = f"{shard:0{shard_digits}d}"
    rows, keys = [], []
    with tarfile.open(folder / f"{name}.tar", "w") as archive:
        for index in indices:
            key = img2dataset_key(shard, index, shard_digits)
            ok = index not in failed
            meta = {"url": f"https://example.com/{key}.jpg", "caption": f"caption {key}", "key": key,
                    "status": "success" if ok else "failed_to_download",
                    "error_message": None if ok else "HTTP Error 404: Not Found", "width": 16 if ok else None,
                    "height": 16 if ok else None, "original_width": 32 if ok else None,
                    "original_height": 32 if ok else None, "exif": None, "sha256": None}
            rows.append(meta)
            if not ok:
                continue
            keys.append(key)
            members = {"jpg": jpeg_bytes(), "json": json.dumps(meta, indent=4).encode(),
                       "txt": meta["caption"].encode()}
            for extension in sorted(members):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode, info.uname, info.gname = len(members[extension]), 0o444, "bigdata", "bigdata"
                archive.addfile(info, io.BytesIO(members[extension]))
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
    stats = {"count": len(indices), "successes": len(keys), "failed_to_download": len(indices) - len(keys),
             "failed_to_resize": 0, "status_dict": {"success": len(keys)}}
    (folder / f"{name}_stats.json").write_text(json.dumps(stats, indent=4))
    return keys


def write_clip_retrieval_output(root: Path, keys: list[str], *, partitions: int = 1, dim: int = 8, seed: int = 0,
                                text: bool = True, embedding=None) -> list[str]:
    """``clip-retrieval inference --input_format webdataset --enable_metadata True`` output for the samples
    ``keys``: ``root/img_emb/img_emb_<n>.npy`` and ``root/text_emb/text_emb_<n>.npy`` (float16), with ``<n>`` padded
    to ``int(log10(partitions)) + 1`` digits, rows in reading order (shuffled here: DataLoader workers interleave
    shards), and ``root/metadata/metadata_<n>.parquet`` (pyarrow) with ``image_path`` (the webdataset key),
    ``caption`` and the sample's json fields.  Text rows are the image rows negated.  Returns the keys in row order."""
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq

    embedding = embedding or (lambda key: key_embedding(int(key[:-4]), int(key[-4:]), dim))
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    digits = int(math.log10(partitions)) + 1
    per_partition = math.ceil(len(order) / partitions)
    for sub in ("img_emb", "text_emb", "metadata") if text else ("img_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for number in range(partitions):
        part = order[number * per_partition:(number + 1) * per_partition]
        name = str(number).zfill(digits)
        image = np.stack([embedding(key) for key in part]).astype(np.float16) if part else \
            np.zeros((0, dim), np.float16)
        np.save(root / "img_emb" / f"img_emb_{name}.npy", image)
        if text:
            np.save(root / "text_emb" / f"text_emb_{name}.npy", -image)
        table = pa.table({"image_path": part, "caption": [f"caption {key}" for key in part],
                          "url": [f"https://example.com/{key}.jpg" for key in part], "key": part,
                          "status": ["success"] * len(part)})
        pq.write_table(table, root / "metadata" / f"metadata_{name}.parquet")
    return order


def write_reordered_embeddings(out: Path, clip_root: Path, *, index_width: int = 4,
                               output_shard_width: int = 5) -> None:
    """What embedding-dataset-reordering's ``reorder_shard`` writes from a clip-retrieval output: per img2dataset
    shard ``out/img_emb_<shard zero-filled to output_shard_width>.npy`` (flat), row ``i`` for the key's last
    ``index_width`` digits; gaps (failed downloads) become float64 zero rows, which makes the whole file float64."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    by_shard: dict[int, dict[int, np.ndarray]] = {}
    for meta_file in sorted((clip_root / "metadata").glob("metadata_*.parquet")):
        embeddings = np.load(clip_root / "img_emb" / meta_file.name.replace("metadata", "img_emb").replace(
            ".parquet", ".npy"))
        for row, key in enumerate(pq.read_table(meta_file).column("image_path").to_pylist()):
            by_shard.setdefault(int(key[:-index_width]), {})[int(key[-index_width:])] = embeddings[row]
    for shard, rows in by_shard.items():
        dim = next(iter(rows.values())).shape
        listed = [rows[i] if i in rows else np.zeros(dim) for i in range(max(rows) + 1)]
        np.save(out / f"img_emb_{str(shard).zfill(output_shard_width)}.npy", listed)

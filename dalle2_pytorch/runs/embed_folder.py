"""`dalle2 embed --images DIR`: CLIP image and text embeddings of a captioned image folder, in clip-retrieval's layout.

Written under ``out``::

    img_emb/img_emb_0.npy        (n, d) float32, row i = the image of metadata row i
    text_emb/text_emb_0.npy      (n, d) float32, row i = its caption
    metadata/metadata_0.parquet  columns image_path (relative to the folder) and caption
    embed_info.json              the CLIP folder, the counts, the unreadable files (skipped)

which is what the prior's ``clip_retrieval`` data section reads.  Rows are in a seeded random order, so that the
section's contiguous train/val/test splits are random samples of the folder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dalle2_pytorch.data.image_folder import scan_captioned_folder
from dalle2_pytorch.data.preprocess import ImagePreprocessor, load_image
from dalle2_pytorch.serialization import atomic_write_bytes, save_json


def load_clip_adapter(clip_dir: str | os.PathLike):
    """The CLIP saved at ``clip_dir`` (``save_pretrained``) as a frozen adapter in eval mode."""
    from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
    from dalle2_pytorch.clip.model import CLIP

    if not (Path(clip_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--clip {str(clip_dir)!r}: no saved CLIP there (config.json missing); give the "
                                "folder of `dalle2 train clip` (<run>/latest/model) or a pipeline's clip/ folder")
    return BuiltinClipAdapter(CLIP.from_pretrained(clip_dir)).eval()


@torch.no_grad()
def embed_captions(adapter, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """CLIP text embeddings of ``captions`` (each distinct caption embedded once)."""
    from dalle2_pytorch.clip.tokenizer import tokenize

    distinct = sorted(set(captions))
    rows = []
    for start in range(0, len(distinct), batch_size):
        tokens = tokenize(distinct[start:start + batch_size], context_length=adapter.max_text_len, truncate=True)
        rows.append(adapter.embed_text(tokens).text_embed.float())
    table = torch.cat(rows)
    where = {caption: i for i, caption in enumerate(distinct)}
    return table[torch.tensor([where[c] for c in captions])]


def save_npy(array: np.ndarray, path: Path) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    atomic_write_bytes(path, buffer.getvalue())
    return path


@torch.no_grad()
def embed_folder(folder: str | os.PathLike, *, clip_dir: str | os.PathLike, out: str | os.PathLike,
                 batch_size: int = 64, seed: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """Embed every readable image of a captioned folder and its caption; returns what ``embed_info.json`` holds."""
    import pyarrow as pa
    import pyarrow.parquet as parquet

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected at least 1")
    adapter = load_clip_adapter(clip_dir)
    scan = scan_captioned_folder(folder)
    order = torch.randperm(len(scan.files), generator=torch.Generator().manual_seed(seed)).tolist()
    files = [scan.files[i] for i in order]
    captions = [scan.captions[i] for i in order]
    preprocess = ImagePreprocessor(image_size=adapter.image_size)
    image_rows = []
    for start in tqdm(range(0, len(files), batch_size), desc="embed images", unit="batch",
                      disable=not show_progress):
        images = torch.stack([preprocess(load_image(path)) for path in files[start:start + batch_size]])
        image_rows.append(adapter.embed_image(images).image_embed.float())
    out = Path(out)
    save_npy(torch.cat(image_rows).numpy(), out / "img_emb" / "img_emb_0.npy")
    save_npy(embed_captions(adapter, captions).numpy(), out / "text_emb" / "text_emb_0.npy")
    root = Path(folder)
    table = pa.table({"image_path": [p.relative_to(root).as_posix() for p in files], "caption": captions})
    buffer = io.BytesIO()
    parquet.write_table(table, buffer)
    atomic_write_bytes(out / "metadata" / "metadata_0.parquet", buffer.getvalue())
    info = {"folder": str(root), "clip": str(clip_dir), "num_embedded": len(files),
            "num_captions": len(set(captions)), "dim": adapter.dim_latent, "unreadable": scan.unreadable}
    save_json(info, out / "embed_info.json")
    return info


def folder_fingerprint(folder: str | os.PathLike) -> list[Any]:
    """What the folder's images and captions are, cheaply (names, sizes, modification times): a changed folder
    changes it, so a pipeline stage trained on the old contents is not reused."""
    from dalle2_pytorch.data.captions import CAPTION_FILES
    from dalle2_pytorch.data.image_folder import IMAGE_EXTENSIONS

    root = Path(folder)
    wanted = set(IMAGE_EXTENSIONS) | {".txt"}
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix.lower() in wanted or path.name in CAPTION_FILES):
            stat = path.stat()
            entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return entries

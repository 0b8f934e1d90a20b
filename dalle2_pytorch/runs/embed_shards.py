"""`dalle2 embed`: CLIP image and text embeddings for img2dataset shards, written as clip-retrieval style
``img_emb_<shard>.npy`` files whose row ``i`` belongs to the key ``<shard><i zero-padded>`` (what the decoder's
``embeddings_url`` reads), and beside them ``text_emb_<shard>.npy`` with the same rows for the samples' ``.txt``
captions (what ``text_embeddings_url`` reads).  Rows of missing or unreadable images stay all zero (the loader skips
those)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from dalle2_pytorch.data.preprocess import ImagePreprocessor
from dalle2_pytorch.data.shards import ReadStats, expand_urls, iterate_tar_samples, shard_name
from dalle2_pytorch.runs.embed_folder import embed_captions, load_clip_adapter, save_npy

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _image_bytes(sample: dict) -> bytes | None:
    return next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)


@torch.no_grad()
def embed_shards(urls: str, *, clip_dir: str, out: str, shard_width: int = 4, batch_size: int = 64) -> list[Path]:
    """Write the embedding files of every shard; returns the image embedding files (text ones lie beside them)."""
    from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE

    adapter = load_clip_adapter(clip_dir)
    with_text = adapter.clip.num_text_tokens >= VOCAB_SIZE
    if not with_text:
        warnings.warn(f"the CLIP in {clip_dir} has {adapter.clip.num_text_tokens} text tokens, fewer than the bundled "
                      f"tokenizer's {VOCAB_SIZE}: writing image embeddings only", RuntimeWarning, stacklevel=3)
    preprocess = ImagePreprocessor(image_size=adapter.image_size)
    written = []
    shards = expand_urls(urls)
    if not shards:
        raise ValueError(f"urls={urls!r} expands to no shard")
    for url in tqdm(shards, desc="embed", unit="shard"):
        stats = ReadStats()
        rows, images, captions = [], [], []
        for sample in iterate_tar_samples(url, stats):
            key = sample["__key__"].split("/")[-1]
            data = _image_bytes(sample)
            if data is None or not key[shard_width:].isdigit():
                continue
            try:
                images.append(preprocess(Image.open(io.BytesIO(data)).convert("RGB")))
            except (OSError, ValueError):
                continue
            rows.append(int(key[shard_width:]))
            text = sample.get("txt")
            captions.append(text.decode("utf-8", errors="replace").strip() if isinstance(text, bytes) else None)
        matrix = np.zeros((max(rows) + 1 if rows else 0, adapter.dim_latent), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            embeds = adapter.embed_image(torch.stack(images[start:start + batch_size])).image_embed
            matrix[rows[start:start + batch_size]] = embeds.float().numpy()
        written.append(save_npy(matrix, Path(out) / f"img_emb_{shard_name(url)}.npy"))
        captioned = [(row, caption) for row, caption in zip(rows, captions) if caption is not None]
        if captioned and with_text:
            texts = np.zeros_like(matrix)
            texts[[row for row, _ in captioned]] = embed_captions(adapter, [c for _, c in captioned]).numpy()
            save_npy(texts, Path(out) / f"text_emb_{shard_name(url)}.npy")
    return written

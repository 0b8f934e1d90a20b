"""`dalle2 embed`: CLIP embeddings of shard images, one row per key, readable by the decoder's shard loader."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tests.data.shard_helpers import jpeg_bytes, write_shard

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.data import ImageEmbeddingDataset, ImagePreprocessor
from dalle2_pytorch.runs.embed_shards import embed_shards


def test_embed_shards_writes_rows_by_key_that_the_loader_reads(tmp_path):
    torch.manual_seed(0)
    clip = CLIP(dim_text=16, dim_image=16, dim_latent=8, text_seq_len=8, text_enc_depth=1, text_heads=2,
                text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8, visual_image_size=16,
                visual_patch_size=8, visual_patch_dropout=0.0)
    clip.save_pretrained(tmp_path / "clip")
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for shard in range(2):
        samples = [{"__key__": f"{shard:04d}{row:04d}", "jpg": jpeg_bytes(colours[row], (24, 24)), "txt": b"x"}
                   for row in (0, 2)]  # row 1 missing: its embedding row stays zero
        samples.append({"__key__": f"{shard:04d}0001", "jpg": b"not an image"})
        write_shard(tmp_path / f"{shard:04d}.tar", samples)

    written = embed_shards(str(tmp_path / "{0000..0001}.tar"), clip_dir=str(tmp_path / "clip"),
                           out=str(tmp_path / "emb"), shard_width=4, batch_size=2)
    assert [p.name for p in written] == ["img_emb_0000.npy", "img_emb_0001.npy"]
    matrix = np.load(written[0])
    assert matrix.shape == (3, 8) and not matrix[1].any()
    expected = BuiltinClipAdapter(clip).embed_image(
        ImagePreprocessor(image_size=16)(Image.open(io.BytesIO(jpeg_bytes(colours[2], (24, 24)))))[None]).image_embed
    assert np.allclose(matrix[2], expected[0].numpy(), atol=1e-5)

    dataset = ImageEmbeddingDataset(str(tmp_path / "{0000..0001}.tar"), embedding_folder_url=str(tmp_path / "emb"),
                                    shard_width=4, image_size=16, shuffle_shards=False)
    with pytest.warns(RuntimeWarning, match="no embedding row"):
        rows = list(dataset)
    assert len(rows) == 4  # the broken image is skipped, the others carry their embeddings
    assert all(emb["img"].abs().sum() > 0 for _, emb in rows)

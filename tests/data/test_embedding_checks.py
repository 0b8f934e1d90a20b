"""Embedding rows are checked by both loaders: NaN/inf rows are skipped and counted with their file and row, and
widths must agree with the first file and the model, one error naming the file and the shapes."""

import numpy as np
import pytest
import torch

from dalle2_pytorch.data import ClipRetrievalEmbeddings, ImageEmbeddingDataset, PriorEmbeddingLoader
from dalle2_pytorch.data.embedding_files import EmbeddingShapeError
from dalle2_pytorch.data.webdataset_loader import create_image_embedding_dataloader

from .shard_helpers import build_img2dataset_shards, jpeg_bytes, npy_bytes, write_shard


def _dataset(shards, embeddings=None, **kwargs):
    return ImageEmbeddingDataset(f"{shards}/{{0000..0001}}.tar", shuffle_shards=False, extra_keys=("txt",),
                                 embedding_folder_url=str(embeddings) if embeddings else None, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_external_rows_are_skipped_counted_and_named(tmp_path, bad):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1, 2])
    table = np.load(embeddings / "img_emb_0001.npy").astype(np.float16)  # clip-retrieval writes float16
    table[2, 3] = bad
    np.save(embeddings / "img_emb_0001.npy", table)
    dataset = _dataset(shards, embeddings)
    with pytest.warns(RuntimeWarning, match=r"'00010002'.*row 2 of .*img_emb_0001\.npy.*NaN or inf"):
        keys = [txt for _, _, txt in dataset]
    assert keys == ["00000000", "00000001", "00000002", "00010000", "00010001"]
    assert dataset.stats.nonfinite_embeddings == 1 and dataset.stats.skipped == 1


def test_nonfinite_in_shard_and_text_rows_are_skipped(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1], text_embeddings=True)
    text = np.load(embeddings / "text_emb_0000.npy")
    text[1, 0] = np.nan
    np.save(embeddings / "text_emb_0000.npy", text)
    dataset = _dataset(shards, embeddings, text_embedding_folder_url=str(embeddings))
    with pytest.warns(RuntimeWarning, match=r"text embedding of sample '00000001'.*row 1 of .*text_emb_0000"):
        assert len(list(dataset)) == 3
    write_shard(shards / "0000.tar", [{"__key__": "00000000", "jpg": jpeg_bytes(),
                                       "npy": npy_bytes(np.full(8, np.inf, np.float32)), "txt": b"a"},
                                      {"__key__": "00000001", "jpg": jpeg_bytes(),
                                       "npy": npy_bytes(np.ones(8, np.float32)), "txt": b"b"}])
    in_shard = ImageEmbeddingDataset(str(shards / "0000.tar"), extra_keys=("txt",))
    with pytest.warns(RuntimeWarning, match=r"00000000\.npy in .*0000\.tar"):
        assert [txt for _, _, txt in in_shard] == ["b"]
    assert in_shard.stats.nonfinite_embeddings == 1


def test_in_shard_shapes_are_checked_not_flattened(tmp_path):
    shards, _ = build_img2dataset_shards(tmp_path, shards=1, rows=[0], in_shard_embeddings=True)
    sample = {"__key__": "00000000", "jpg": jpeg_bytes()}
    write_shard(shards / "0000.tar", [{**sample, "npy": npy_bytes(np.ones((2, 32), np.float32))}])
    with pytest.raises(EmbeddingShapeError, match=r"00000000\.npy in .*0000\.tar.*shape \(2, 32\)"):
        list(ImageEmbeddingDataset(str(shards / "0000.tar")))
    write_shard(shards / "0000.tar", [{**sample, "npy": npy_bytes(np.ones((1, 32), np.float32))},
                                      {**sample, "__key__": "00000001", "npy": npy_bytes(np.ones(16, np.float32))}])
    assert next(iter(ImageEmbeddingDataset(str(shards / "0000.tar"))))[1]["img"].shape == (32,)  # (1, d) is fine
    with pytest.raises(EmbeddingShapeError, match=r"00000001\.npy .*shape \(16,\).*00000000\.npy .*width 32"):
        list(ImageEmbeddingDataset(str(shards / "0000.tar")))
    with pytest.raises(EmbeddingShapeError, match=r"shape \(1, 32\) but the model expects width 16"):
        list(ImageEmbeddingDataset(str(shards / "0000.tar"), embed_dim=16))


def test_mixed_external_widths_fail_before_collate_naming_the_file(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1])
    np.save(embeddings / "img_emb_0001.npy", np.ones((2, 12), np.float16))
    loader = create_image_embedding_dataloader(f"{shards}/{{0000..0001}}.tar", embeddings_url=str(embeddings),
                                               num_workers=0, batch_size=4, shuffle_shards=False)
    with pytest.raises(EmbeddingShapeError, match=r"img_emb_0001\.npy.*width 12 \(shape \(2, 12\)\).*"
                                                  r"img_emb_0000\.npy.*width 8"):
        list(loader)
    with pytest.raises(EmbeddingShapeError, match=r"img_emb_0000\.npy.*width 8.*model expects 12"):
        _dataset(shards, embeddings, embed_dim=12)  # checked as the data set is built, from the first file


def test_one_dimensional_text_embedding_file_is_an_error(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1], text_embeddings=True)
    np.save(embeddings / "text_emb_0000.npy", np.ones(16, np.float32))
    with pytest.raises(EmbeddingShapeError, match=r"text_emb_0000\.npy.*shape \(16,\)"):
        _dataset(shards, embeddings, text_embedding_folder_url=str(embeddings))


def _clip_retrieval(root, widths=(4, 4), text_widths=None, rows=6):
    for sub in ("img_emb", "text_emb"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for number, width in enumerate(widths):
        values = np.arange(rows * width, dtype=np.float16).reshape(rows, width) + number * 100
        np.save(root / "img_emb" / f"img_emb_{number}.npy", values)
        text_width = (text_widths or widths)[number]
        np.save(root / "text_emb" / f"text_emb_{number}.npy", np.ones((rows, text_width), np.float16))
    return root


def test_prior_rows_with_nan_are_dropped_counted_and_named(tmp_path):
    root = _clip_retrieval(tmp_path)
    image = np.load(root / "img_emb" / "img_emb_1.npy")
    image[2, 1] = np.nan
    np.save(root / "img_emb" / "img_emb_1.npy", image)
    text = np.load(root / "text_emb" / "text_emb_0.npy")
    text[5, 0] = np.inf
    np.save(root / "text_emb" / "text_emb_0.npy", text)
    embeddings = ClipRetrievalEmbeddings.from_folder(root)
    loader = PriorEmbeddingLoader(embeddings, batch_size=4, shuffle=False)
    with pytest.warns(RuntimeWarning) as caught:
        batches = list(loader)
    messages = [str(w.message) for w in caught]
    assert any("row 2 of " in m and "img_emb_1.npy" in m for m in messages)
    assert any("row 5 of " in m and "text_emb_0.npy" in m for m in messages)
    assert [len(b["image_embed"]) for b in batches] == [4, 3, 3]
    assert loader.nonfinite_rows == 2 and all(torch.isfinite(b["image_embed"]).all() for b in batches)
    assert all(b["image_embed"].dtype == torch.float32 for b in batches)


def test_prior_widths_are_checked_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"img_emb_1\.npy has rows of width 6 .*img_emb_0\.npy has width 4"):
        ClipRetrievalEmbeddings.from_folder(_clip_retrieval(tmp_path / "a", widths=(4, 6)))
    with pytest.raises(ValueError, match=r"text_emb_1\.npy has rows of width 3"):
        ClipRetrievalEmbeddings.from_folder(_clip_retrieval(tmp_path / "b", text_widths=(4, 3)))
    with pytest.raises(ValueError, match=r"img_emb_0\.npy has rows of width 4 .*the model's embed_dim has width 8"):
        ClipRetrievalEmbeddings.from_folder(_clip_retrieval(tmp_path / "c"), embed_dim=8)
    root = _clip_retrieval(tmp_path / "d")
    np.save(root / "text_emb" / "text_emb_0.npy", np.ones(6, np.float16))
    with pytest.raises(ValueError, match=r"text_emb_0\.npy must hold a 2-d array .*shape \(6,\)"):
        ClipRetrievalEmbeddings.from_folder(root)


def test_prior_data_that_gives_no_batch_is_an_error(tmp_path):
    root = _clip_retrieval(tmp_path / "a", rows=0)
    with pytest.raises(ValueError, match="hold no rows"):
        ClipRetrievalEmbeddings.from_folder(root)
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"rank 1 of 2\) 6 samples: no batch of batch_size=8 with drop_last"):
        PriorEmbeddingLoader(embeddings, batch_size=8, drop_last=True, rank=1, world_size=2)
    (tmp_path / "b" / "text_emb" / "text_emb_1.npy").rename(tmp_path / "b" / "text_emb" / "text_emb_7.npy")
    with pytest.raises(ValueError, match="not numbered like the image embeddings"):
        ClipRetrievalEmbeddings.from_folder(tmp_path / "b")

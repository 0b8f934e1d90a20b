"""The decoder's loader reads the files img2dataset, clip-retrieval and embedding-dataset-reordering really write
(names, zero padding, float16/float64 dtypes, key -> row mapping), and a folder that matches nothing is an error."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dalle2_pytorch.data import ImageEmbeddingDataset
from dalle2_pytorch.data.shards import NoDataError

from .shard_helpers import (key_embedding, write_clip_retrieval_output, write_img2dataset_shard,
                            write_reordered_embeddings)

pytest.importorskip("pyarrow")
REPO = Path(__file__).resolve().parents[2]


def _laion(root, shards=2, per_shard=6, failed=(1, 4)):
    """img2dataset shards 00000.tar.. with some failed downloads (gaps in the keys) and their clip-retrieval output."""
    keys = []
    for shard in range(shards):
        keys += write_img2dataset_shard(root / "laion", shard, list(range(per_shard)), failed=failed)
    return keys


def _read_all(dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be skipped
        return {meta["key"]: embeds for _, embeds, meta in dataset}


def _expected(key, dim=8):
    return torch.from_numpy(key_embedding(int(key[:5]), int(key[5:]), dim).astype(np.float32))


@pytest.mark.parametrize("partitions", [1, 12])
def test_reads_raw_clip_retrieval_output_by_key(tmp_path, partitions):
    """clip-retrieval numbers its partitions img_emb_0.npy (img_emb_00..img_emb_11 with 12) in reading order; the
    metadata's image_path names each row's key, so every sample gets its own row whatever the order."""
    keys = _laion(tmp_path)
    order = write_clip_retrieval_output(tmp_path / "laion_embeddings", keys, partitions=partitions)
    assert order != sorted(order)  # rows are not in key order: matching by position would be wrong
    names = sorted(p.name for p in (tmp_path / "laion_embeddings" / "img_emb").iterdir())
    assert names[0] == ("img_emb_0.npy" if partitions == 1 else "img_emb_00.npy")
    for folder in ("laion_embeddings/img_emb", "laion_embeddings"):  # the img_emb folder or the output's root
        dataset = ImageEmbeddingDataset(f"{tmp_path}/laion/{{00000..00001}}.tar",
                                        embedding_folder_url=f"{tmp_path}/{folder}",
                                        text_embedding_folder_url=f"{tmp_path}/laion_embeddings/text_emb",
                                        shard_width=5, extra_keys=("json",), shuffle_shards=False)
        assert dataset.embedding_files["img"].layout == "clip_retrieval"
        seen = _read_all(dataset)
        assert sorted(seen) == sorted(keys) and len(keys) == 8
        for key, embeds in seen.items():
            assert embeds["img"].dtype == torch.float32 and torch.equal(embeds["img"], _expected(key))
            assert torch.equal(embeds["text"], -_expected(key))


@pytest.mark.parametrize("output_shard_width", [1, 5, 6])
def test_reads_embedding_dataset_reordering_output(tmp_path, output_shard_width):
    """embedding-dataset-reordering writes img_emb_<shard zero-filled to output_shard_width>.npy per tar shard
    (img_emb_0.npy, img_emb_00000.npy or img_emb_000000.npy for 00000.tar), zero rows (float64) for failed
    downloads; rows are the key's last 4 digits."""
    keys = _laion(tmp_path)
    write_clip_retrieval_output(tmp_path / "clip", keys, partitions=3)
    write_reordered_embeddings(tmp_path / "reordered", tmp_path / "clip", output_shard_width=output_shard_width)
    first = np.load(tmp_path / "reordered" / f"img_emb_{'0' * output_shard_width}.npy")
    assert first.dtype == np.float64 and not first[1].any()  # the gap of the failed download
    dataset = ImageEmbeddingDataset(f"{tmp_path}/laion/{{00000..00001}}.tar",
                                    embedding_folder_url=str(tmp_path / "reordered"), shard_width=5,
                                    extra_keys=("json",), shuffle_shards=False)
    assert dataset.embedding_files["img"].layout == "per_shard"
    seen = _read_all(dataset)
    assert sorted(seen) == sorted(keys)
    for key, embeds in seen.items():
        assert torch.equal(embeds["img"], _expected(key))


def test_the_shipped_decoder_config_reads_a_clip_retrieval_folder(tmp_path):
    """configs/decoder_single_gpu.json's data section, pointed at a tmp copy of its layout, reads every sample."""
    data = json.loads((REPO / "configs" / "decoder_single_gpu.json").read_text())["data"]
    keys = _laion(tmp_path)
    write_clip_retrieval_output(tmp_path / "laion_embeddings", keys, partitions=1)
    urls = data["urls"].replace("data/", f"{tmp_path}/").replace("09999", "00001")
    dataset = ImageEmbeddingDataset(urls, embedding_folder_url=data["embeddings_url"].replace("data/",
                                                                                              f"{tmp_path}/"),
                                    shard_width=data["shard_width"], image_size=16, extra_keys=("json",))
    assert sorted(_read_all(dataset)) == sorted(keys)


def test_a_folder_that_matches_nothing_is_an_error_naming_it(tmp_path):
    keys = _laion(tmp_path)
    urls = f"{tmp_path}/laion/{{00000..00001}}.tar"
    with pytest.raises(ValueError, match="does not exist"):
        ImageEmbeddingDataset(urls, embedding_folder_url=str(tmp_path / "absent"), shard_width=5)
    (tmp_path / "wrong").mkdir()
    np.save(tmp_path / "wrong" / "embeddings.npy", np.ones((2, 8)))
    with pytest.raises(ValueError, match=r"no img_emb_<number>.npy in .*wrong.*holds: embeddings.npy"):
        ImageEmbeddingDataset(urls, embedding_folder_url=str(tmp_path / "wrong"), shard_width=5)
    (tmp_path / "others").mkdir()
    np.save(tmp_path / "others" / "img_emb_7.npy", np.ones((2, 8)))
    with pytest.raises(ValueError, match=r"no img_emb file in .*img_emb_7\.\.7\.npy.*shards 00000\.\.00001"):
        ImageEmbeddingDataset(urls, embedding_folder_url=str(tmp_path / "others"), shard_width=5)
    np.save(tmp_path / "others" / "img_emb_00007.npy", np.ones((2, 8)))
    with pytest.raises(ValueError, match="both hold img_emb number 7"):
        ImageEmbeddingDataset(urls, embedding_folder_url=str(tmp_path / "others"), shard_width=5)
    del keys


def test_reordered_files_beside_stale_metadata_are_an_error(tmp_path):
    keys = _laion(tmp_path)
    write_clip_retrieval_output(tmp_path / "out", keys, partitions=3)
    write_reordered_embeddings(tmp_path / "out" / "reordered", tmp_path / "out", output_shard_width=1)
    (tmp_path / "out" / "metadata" / "metadata_2.parquet").unlink()
    (tmp_path / "out" / "metadata" / "metadata_1.parquet").unlink()
    # out/reordered holds img_emb_0, img_emb_1; out/metadata holds metadata_0 only: they cannot pair
    with pytest.raises(ValueError, match="must pair"):
        ImageEmbeddingDataset(f"{tmp_path}/laion/00000.tar", embedding_folder_url=str(tmp_path / "out" / "reordered"),
                              shard_width=5)


def test_metadata_row_counts_must_match_the_embeddings(tmp_path):
    keys = _laion(tmp_path, shards=1)
    write_clip_retrieval_output(tmp_path / "out", keys, partitions=1)
    np.save(tmp_path / "out" / "img_emb" / "img_emb_0.npy", np.ones((2, 8), np.float16))
    dataset = ImageEmbeddingDataset(f"{tmp_path}/laion/00000.tar", embedding_folder_url=str(tmp_path / "out"),
                                    shard_width=5)
    with pytest.raises(ValueError, match="2 rows but its metadata file has 4"):
        list(dataset)


def test_embeddings_of_other_samples_are_an_error_describing_the_clip_retrieval_layout(tmp_path):
    """clip-retrieval output made from another download (none of its keys is in the shards): reading stops with an
    error that describes the folder as what it is, rows matched by key through its metadata (not per-shard rows)."""
    _laion(tmp_path, shards=1)
    other = [key.replace("00000", "00007", 1) for key in _laion(tmp_path / "other", shards=1)]
    write_clip_retrieval_output(tmp_path / "out", other, partitions=1)
    dataset = ImageEmbeddingDataset(f"{tmp_path}/laion/00000.tar", embedding_folder_url=str(tmp_path / "out"),
                                    shard_width=5)
    with pytest.warns(RuntimeWarning), pytest.raises(NoDataError) as error:
        next(iter(dataset))
    message = str(error.value)
    assert f"clip-retrieval layout, rows matched by key through {tmp_path / 'out'}/metadata" in message
    assert "per-shard" not in message and "missing_embeddings" in message


def test_resampling_broken_shards_stops_with_an_error(tmp_path):
    keys = _laion(tmp_path, shards=1)
    write_clip_retrieval_output(tmp_path / "out", keys, partitions=1)
    dataset = ImageEmbeddingDataset(f"{tmp_path}/laion/{{00000..00001}}.tar", resample=True,
                                    embedding_folder_url=str(tmp_path / "out"), shard_width=5)
    (tmp_path / "laion" / "00000.tar").write_bytes(b"not a tar")
    with pytest.warns(RuntimeWarning), pytest.raises(NoDataError, match="out"):
        next(iter(dataset))


def test_clip_retrieval_layout_with_workers_and_fsspec(tmp_path):
    from dalle2_pytorch.data.webdataset_loader import create_image_embedding_dataloader

    keys = _laion(tmp_path, shards=3)
    write_clip_retrieval_output(tmp_path / "emb", keys, partitions=2)
    loader = create_image_embedding_dataloader(f"{tmp_path}/laion/{{00000..00002}}.tar", num_workers=2,
                                               batch_size=3, embeddings_url=str(tmp_path / "emb" / "img_emb"),
                                               shard_width=5, extra_keys=("txt",))
    seen = {caption.split()[-1]: emb for _, embeds, captions in loader for caption, emb in zip(captions, embeds["img"])}
    assert sorted(seen) == sorted(keys) and all(torch.equal(v, _expected(k)) for k, v in seen.items())

    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for path in (tmp_path / "emb").rglob("*.*"):
        memory.pipe(f"/real-layout/{path.relative_to(tmp_path)}", path.read_bytes())
    remote = ImageEmbeddingDataset(f"{tmp_path}/laion/00001.tar", embedding_folder_url="memory://real-layout/emb",
                                   shard_width=5, extra_keys=("json",))
    assert remote.embedding_files["img"].layout == "clip_retrieval"
    assert sorted(_read_all(remote)) == [k for k in sorted(keys) if k.startswith("00001")]
    memory.rm("/real-layout", recursive=True)

"""Webdataset shards + CLIP embeddings for decoder training: row matching, damage tolerance, rank/worker splits."""

import tarfile
import warnings

import pytest
import torch

from dalle2_pytorch.data.shards import NoDataError, ReadStats, expand_urls, iterate_tar_samples, shard_name
from dalle2_pytorch.dataloaders import ImageEmbeddingDataset, create_image_embedding_dataloader

from .shard_helpers import build_img2dataset_shards, jpeg_bytes, row_embedding, write_shard


def _keys_and_embeddings(dataset):
    return [(txt, emb["img"]) for _, emb, txt in dataset]


def test_expand_urls():
    assert expand_urls("d/{0008..0011}.tar") == ["d/0008.tar", "d/0009.tar", "d/0010.tar", "d/0011.tar"]
    assert expand_urls(["{a,b}/{0..1}.tar"]) == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]
    with pytest.raises(ValueError, match="backwards"):
        expand_urls("{5..1}.tar")
    assert shard_name("s3://bucket/data/0012.tar") == "0012"
    assert shard_name("pipe:aws s3 cp s3://bucket/0012.tar -") == "0012"


def test_pipe_urls_stream_shards(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1])
    dataset = ImageEmbeddingDataset(urls=f"pipe:cat {shards}/{{0000..0001}}.tar", embedding_folder_url=str(embeddings),
                                    shuffle_shards=False, extra_keys=("txt",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [txt for _, _, txt in dataset] == ["00000000", "00000001", "00010000", "00010001"]
    failing = ImageEmbeddingDataset(urls="pipe:exit 3")
    with pytest.warns(RuntimeWarning), pytest.raises(NoDataError, match="pipe:exit 3"):
        list(failing)
    assert failing.stats.unreadable_shards == 1


def test_external_embeddings_matched_by_key_index(tmp_path):
    """With shard width 4, image 00010509.jpg in shard 0001.tar takes row 509 of img_emb_0001.npy."""
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 3, 509])
    dataset = ImageEmbeddingDataset(urls=f"{shards}/{{0000..0001}}.tar", embedding_folder_url=str(embeddings),
                                    shard_width=4, shuffle_shards=False, resample=False, extra_keys=("txt",))
    seen = dict(_keys_and_embeddings(dataset))
    assert sorted(seen) == ["00000000", "00000003", "00000509", "00010000", "00010003", "00010509"]
    for key, embedding in seen.items():
        assert torch.equal(embedding, torch.from_numpy(row_embedding(int(key[:4]), int(key[4:]))))
    assert dataset.stats.samples == 6 and dataset.stats.skipped == 0


def test_seed_readme_dataloader_call(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=3, rows=list(range(5)), text_embeddings=True)
    dataloader = create_image_embedding_dataloader(
        tar_url=f"{shards}/{{0000..0002}}.tar", embeddings_url=str(embeddings), num_workers=0, batch_size=4,
        shard_width=4, shuffle_num=8, shuffle_shards=True, resample_shards=False, text_embeddings_url=str(embeddings))
    batches = list(dataloader)
    assert [len(img) for img, _ in batches] == [4, 4, 4, 3]
    img, emb = batches[0]
    assert img.shape == (4, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    assert emb["img"].shape == (4, 8) and torch.equal(emb["text"], -emb["img"])


def test_in_shard_embeddings_and_resizing(tmp_path):
    shards, _ = build_img2dataset_shards(tmp_path, shards=1, rows=[1, 2], in_shard_embeddings=True,
                                         image_size=(40, 24))
    dataset = ImageEmbeddingDataset(urls=str(shards / "0000.tar"), image_size=16, extra_keys=("txt",))
    items = list(dataset)
    assert [txt for _, _, txt in items] == ["00000001", "00000002"]
    assert items[0][0].shape == (3, 16, 16)
    assert torch.equal(items[1][1]["img"], torch.from_numpy(row_embedding(0, 2)))
    as_extra = list(ImageEmbeddingDataset(urls=str(shards / "0000.tar"), image_size=16, extra_keys=("npy",)))
    assert torch.equal(as_extra[1][2], torch.from_numpy(row_embedding(0, 2)))  # an .npy extra comes decoded


def test_corrupt_image_and_missing_embedding_are_skipped_and_counted(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=1, rows=[0, 1, 2, 3])
    bad = [{"__key__": "00000000", "jpg": jpeg_bytes(), "txt": b"ok"},
           {"__key__": "00000001", "jpg": b"not a jpeg at all", "txt": b"corrupt"},
           {"__key__": "00000002", "jpg": jpeg_bytes()[:40], "txt": b"truncated jpeg"},
           {"__key__": "00000007", "jpg": jpeg_bytes(), "txt": b"no row 7"},
           {"__key__": "00000003", "jpg": jpeg_bytes(), "txt": b"ok"}]
    write_shard(shards / "0000.tar", bad)
    dataset = ImageEmbeddingDataset(urls=str(shards / "0000.tar"), embedding_folder_url=str(embeddings),
                                    extra_keys=("txt",))
    with pytest.warns(RuntimeWarning):
        texts = [txt for _, _, txt in dataset]
    assert texts == ["ok", "ok"]
    assert dataset.stats.corrupt_images == 2 and dataset.stats.missing_embeddings == 1


@pytest.mark.parametrize("cut", ["mid_data", "mid_header", "member_boundary", "end_marker"])
def test_truncated_shard_keeps_earlier_samples_and_moves_on(tmp_path, cut):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=list(range(6)))
    first = shards / "0000.tar"
    data = first.read_bytes()
    with tarfile.open(first) as archive:
        members = archive.getmembers()
    fourth = members[6]  # the jpg of the fourth sample
    end_of_data = members[-1].offset_data + members[-1].size
    position = {"mid_data": fourth.offset_data + fourth.size // 2, "mid_header": fourth.offset + 100,
                "member_boundary": fourth.offset, "end_marker": end_of_data + 10}[cut]
    first.write_bytes(data[:position])
    dataset = ImageEmbeddingDataset(urls=f"{shards}/{{0000..0001}}.tar", embedding_folder_url=str(embeddings),
                                    shuffle_shards=False, extra_keys=("txt",))
    with pytest.warns(RuntimeWarning, match="truncated"):
        keys = [txt for _, _, txt in dataset]
    from_first = [k for k in keys if k.startswith("0000")]
    assert len(from_first) == (6 if cut == "end_marker" else 3) and len([k for k in keys if k.startswith("0001")]) == 6
    assert dataset.stats.truncated_shards == 1


def test_directories_and_links_inside_a_shard_are_passed_over(tmp_path):
    """A shard made with ``tar -cf 00000.tar -C folder .`` holds the folder's own entry, subfolders (a stray
    .ipynb_checkpoints) and symbolic links besides the samples' files: only regular files are samples' members,
    the rest is passed over without losing the shard or counting anything as skipped."""
    folder = tmp_path / "folder"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    members = {f"00000{row:04d}.{ext}": (jpeg_bytes((40 * row, 0, 0)) if ext == "jpg" else f"caption {row}".encode())
               for row in range(3) for ext in ("jpg", "txt")}
    for name, data in members.items():
        (folder / name).write_bytes(data)
    (folder / "000000003.jpg").symlink_to("000000000.jpg")  # a sample whose image is a link
    (folder / "000000003.txt").write_bytes(b"caption 3")
    with tarfile.open(tmp_path / "00000.tar", "w") as archive:  # what `tar -C folder .` writes, dirs and links kept
        archive.add(folder, arcname=".")
    with tarfile.open(tmp_path / "00000.tar") as archive:
        kinds = {member.name: member.type for member in archive.getmembers()}
    assert kinds["./.ipynb_checkpoints"] == tarfile.DIRTYPE and kinds["./000000003.jpg"] == tarfile.SYMTYPE

    stats = ReadStats()
    samples = list(iterate_tar_samples(str(tmp_path / "00000.tar"), stats))
    read = {f"{s['__key__']}.{ext}": data for s in samples for ext, data in s.items() if not ext.startswith("__")}
    assert read == {**{f"./{name}": data for name, data in members.items()}, "./000000003.txt": b"caption 3"}
    assert stats.skipped == 0 and stats.shards == 1


def test_missing_embedding_file_and_wrong_shard_width_are_skipped(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1])
    (embeddings / "img_emb_0001.npy").unlink()
    dataset = ImageEmbeddingDataset(urls=f"{shards}/{{0000..0001}}.tar", embedding_folder_url=str(embeddings))
    with pytest.warns(RuntimeWarning, match="img_emb_0001"):
        assert len(list(dataset)) == 2
    wrong_width = ImageEmbeddingDataset(urls=f"{shards}/0000.tar", embedding_folder_url=str(embeddings),
                                        shard_width=9)
    with pytest.warns(RuntimeWarning, match="shard_width"), pytest.raises(NoDataError, match="shard_width=9"):
        list(wrong_width)
    assert wrong_width.stats.key_mismatches == 2


def test_shards_split_across_ranks_and_workers(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=4, rows=[0, 1, 2])
    url = f"{shards}/{{0000..0003}}.tar"
    per_rank = []
    for rank in range(2):
        dataset = ImageEmbeddingDataset(urls=url, embedding_folder_url=str(embeddings), rank=rank, world_size=2,
                                        extra_keys=("txt",), seed=1)
        per_rank.append({txt for _, _, txt in dataset})
    assert not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == 12
    loader = create_image_embedding_dataloader(tar_url=url, embeddings_url=str(embeddings), num_workers=2,
                                               batch_size=2, extra_keys=("txt",))
    keys = [key for _, _, txt in loader for key in txt]
    assert sorted(keys) == sorted(per_rank[0] | per_rank[1])  # every sample exactly once


def test_fewer_shards_than_readers_is_a_runtime_warning_from_the_first_reader_only(tmp_path):
    """Like every data problem the loader reports (skips, gaps), an idle reader is a RuntimeWarning, raised once:
    by rank 0 (worker 0); the shard is still read by exactly one rank."""
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=1, rows=[0, 1])
    read = []
    for rank in range(2):
        dataset = ImageEmbeddingDataset(urls=f"{shards}/0000.tar", embedding_folder_url=str(embeddings), rank=rank,
                                        world_size=2, extra_keys=("txt",))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read.append([txt for _, _, txt in dataset])
        idle = [w for w in caught if "some readers get no data" in str(w.message)]
        if rank == 0:
            assert [w.category for w in idle] == [RuntimeWarning]
            assert "only 1 shards for 2 readers" in str(idle[0].message)
        else:
            assert not idle
    assert len(read[0]) == 2 and read[1] == []


def test_shuffling_is_seeded_and_resampling_is_endless(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=3, rows=list(range(4)))
    url = f"{shards}/{{0000..0002}}.tar"

    def order(seed, epoch=0):
        dataset = ImageEmbeddingDataset(urls=url, embedding_folder_url=str(embeddings), shuffle_buffer=5,
                                        extra_keys=("txt",), seed=seed)
        dataset.set_epoch(epoch)
        return [txt for _, _, txt in dataset]

    assert order(0) == order(0) and sorted(order(0)) == sorted(order(1))
    assert order(0) != order(1) or order(0) != order(0, epoch=1)
    endless = ImageEmbeddingDataset(urls=url, embedding_folder_url=str(embeddings), resample=True)
    stream = iter(endless)
    assert len([next(stream) for _ in range(30)]) == 30


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="shard_width"):
        ImageEmbeddingDataset(urls="x.tar", shard_width=0)
    with pytest.raises(ValueError, match="image_size or img_preproc"):
        ImageEmbeddingDataset(urls="x.tar", image_size=8, img_preproc=lambda image: image)
    with pytest.raises(TypeError):
        ImageEmbeddingDataset(urls="x.tar", embedings_url="typo")
    with pytest.raises(ValueError, match="batch_size"):
        create_image_embedding_dataloader(tar_url="x.tar", num_workers=0, batch_size=0)
    missing = ImageEmbeddingDataset(urls=str(tmp_path / "absent.tar"))
    with pytest.warns(RuntimeWarning, match="not found"), pytest.raises(NoDataError, match="absent.tar"):
        list(missing)


def test_reads_shards_written_by_webdataset(tmp_path):
    """img2dataset writes its shards with webdataset's TarWriter; read such shards back."""
    wds = pytest.importorskip("webdataset")
    import numpy as np

    (tmp_path / "emb").mkdir()
    with wds.TarWriter(str(tmp_path / "0003.tar")) as writer:
        for row in range(3):
            writer.write({"__key__": f"0003{row:04d}", "jpg": jpeg_bytes(), "txt": f"caption {row}",
                          "json": {"key": row}})
    np.save(tmp_path / "emb" / "img_emb_0003.npy", np.stack([row_embedding(3, r) for r in range(3)]))
    dataset = ImageEmbeddingDataset(urls=str(tmp_path / "0003.tar"), embedding_folder_url=str(tmp_path / "emb"),
                                    extra_keys=("txt", "json"))
    items = list(dataset)
    assert [(txt, meta["key"]) for _, _, txt, meta in items] == [("caption 0", 0), ("caption 1", 1), ("caption 2", 2)]
    assert torch.equal(items[2][1]["img"], torch.from_numpy(row_embedding(3, 2)))


def test_resume_mid_epoch_with_workers(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=4, rows=list(range(5)))
    url = f"{shards}/{{0000..0003}}.tar"

    def loader():
        return create_image_embedding_dataloader(tar_url=url, embeddings_url=str(embeddings), num_workers=2,
                                                 batch_size=2, shuffle_num=4, extra_keys=("txt",), seed=5)

    full = [list(txt) for _, _, txt in loader()]
    resumed = loader()
    resumed.dataset.set_position(epoch=0, batches_consumed=3, batch_size=2)
    rest = [list(txt) for _, _, txt in resumed]
    # the remaining batches in the same order: worker 0 takes over the reader whose batch comes next
    assert rest == full[3:]


def test_corrupt_embedding_data_is_skipped(tmp_path):
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 1], in_shard_embeddings=True)
    write_shard(shards / "0000.tar", [{"__key__": "00000000", "jpg": jpeg_bytes(), "npy": b"not npy"},
                                      {"__key__": "00000001", "jpg": jpeg_bytes(), "npy": b"\x93NUMPY broken"}])
    (embeddings / "img_emb_0001.npy").write_bytes(b"garbage")
    in_shard = ImageEmbeddingDataset(urls=f"{shards}/{{0000..0001}}.tar", shuffle_shards=False)
    with pytest.warns(RuntimeWarning):
        assert len(list(in_shard)) == 2  # only shard 0001's good samples
    assert in_shard.stats.missing_embeddings == 2
    external = ImageEmbeddingDataset(urls=f"{shards}/0001.tar", embedding_folder_url=str(embeddings))
    with pytest.warns(RuntimeWarning, match="cannot be read"), pytest.raises(NoDataError, match="unreadable_shards"):
        list(external)
    assert external.stats.unreadable_shards == 1


def test_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=[0, 4])
    memory = fsspec.filesystem("memory")
    for path in list(shards.iterdir()) + list(embeddings.iterdir()):
        memory.pipe(f"/dalle2-test/{path.parent.name}/{path.name}", path.read_bytes())
    dataset = ImageEmbeddingDataset(urls="memory://dalle2-test/shards/{0000..0001}.tar", shuffle_shards=False,
                                    embedding_folder_url="memory://dalle2-test/emb", extra_keys=("txt",))
    items = list(dataset)
    assert [txt for _, _, txt in items] == ["00000000", "00000004", "00010000", "00010004"]
    assert torch.equal(items[3][1]["img"], torch.from_numpy(row_embedding(1, 4)))
    memory.rm("/dalle2-test", recursive=True)

"""clip-retrieval embedding folders -> (text, image) embedding batches: splits, rank sharding, exact resume."""

import numpy as np
import pytest
import torch

from dalle2_pytorch.data.prior_embeddings import ClipRetrievalEmbeddings, PriorEmbeddingLoader, make_splits, rank_range


def _clip_retrieval_folder(root, counts=(7, 5, 11), dim=4, captions=False):
    """Row i (global) of the image embeddings is filled with i; its text embedding with -i."""
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    start = 0
    # Written out of name order (and with 10 > 2) to check numeric file ordering.
    for number, count in zip((0, 2, 10), counts):
        values = np.arange(start, start + count, dtype=np.float32)[:, None].repeat(dim, 1)
        np.save(root / "img_emb" / f"img_emb_{number}.npy", values)
        np.save(root / "text_emb" / f"text_emb_{number}.npy", -values)
        if captions:
            import pyarrow as pa
            import pyarrow.parquet as pq
            table = pa.table({"caption": [f"caption {i}" for i in range(start, start + count)]})
            pq.write_table(table, root / "metadata" / f"metadata_{number}.parquet")
        start += count
    return root


def test_reads_pairs_across_files_in_numeric_order(tmp_path):
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval_folder(tmp_path))
    assert len(embeddings) == 23 and embeddings.dim == 4
    batch = embeddings.batch([22, 0, 7, 12, 6])
    assert batch["image_embed"][:, 0].tolist() == [22, 0, 7, 12, 6]
    assert torch.equal(batch["text_embed"], -batch["image_embed"])
    with pytest.raises(IndexError):
        embeddings.batch([23])


def test_captions_from_parquet_metadata(tmp_path):
    pytest.importorskip("pyarrow")
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval_folder(tmp_path, captions=True), captions=True)
    assert embeddings.batch([3, 20])["caption"] == ["caption 3", "caption 20"]


def test_mismatched_row_counts_are_an_error(tmp_path):
    root = _clip_retrieval_folder(tmp_path)
    np.save(root / "text_emb" / "text_emb_2.npy", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="row counts"):
        ClipRetrievalEmbeddings.from_folder(root)


def test_make_splits_validates_and_tolerates_float_sums():
    assert make_splits(1000, {"train": 0.7, "val": 0.2, "test": 0.1}) == \
        {"train": (0, 700), "val": (700, 900), "test": (900, 1000)}
    assert make_splits(10, {"train": 1.0}) == {"train": (0, 10)}
    with pytest.raises(ValueError, match="sum to"):
        make_splits(10, {"train": 0.8, "val": 0.1})
    with pytest.raises(ValueError, match="'val' has fraction -0.2"):
        make_splits(10, {"train": 1.2 - 1, "val": -0.2})


def test_ranks_get_equal_disjoint_parts():
    parts = [rank_range(10, 33, rank, 3) for rank in range(3)]
    assert parts == [(10, 17), (17, 24), (24, 31)]
    with pytest.raises(ValueError, match="rank"):
        rank_range(0, 10, 2, 2)


def test_loader_covers_split_once_per_epoch_per_rank(tmp_path):
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval_folder(tmp_path))
    seen = []
    for rank in range(2):
        loader = PriorEmbeddingLoader(embeddings, batch_size=4, start=2, stop=22, rank=rank, world_size=2, seed=3)
        assert len(loader) == 3
        seen.append([int(v) for batch in loader for v in batch["image_embed"][:, 0]])
    assert sorted(seen[0] + seen[1]) == list(range(2, 22)) and not set(seen[0]) & set(seen[1])


def test_resume_continues_with_exactly_the_unseen_batches(tmp_path):
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval_folder(tmp_path))
    reference = PriorEmbeddingLoader(embeddings, batch_size=5, seed=7)
    full_epochs = [[b["image_embed"][:, 0].tolist() for b in reference] for _ in range(2)]
    assert full_epochs[0] != full_epochs[1] and sorted(sum(full_epochs[0], [])) == list(range(23))

    interrupted = PriorEmbeddingLoader(embeddings, batch_size=5, seed=7)
    iterator = iter(interrupted)
    first_two = [next(iterator)["image_embed"][:, 0].tolist() for _ in range(2)]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "consumed": 10, "seed": 7}

    resumed = PriorEmbeddingLoader(embeddings, batch_size=5, seed=7)
    resumed.load_state_dict(state)
    rest = [b["image_embed"][:, 0].tolist() for b in resumed]
    assert first_two + rest == full_epochs[0]
    assert [b["image_embed"][:, 0].tolist() for b in resumed] == full_epochs[1]
    with pytest.raises(ValueError, match="seed"):
        PriorEmbeddingLoader(embeddings, batch_size=5, seed=8).load_state_dict(state)


def test_loader_arguments_are_checked(tmp_path):
    embeddings = ClipRetrievalEmbeddings.from_folder(_clip_retrieval_folder(tmp_path))
    with pytest.raises(ValueError, match="batch_size"):
        PriorEmbeddingLoader(embeddings, batch_size=0)
    with pytest.raises(ValueError, match="stop"):
        PriorEmbeddingLoader(embeddings, batch_size=2, stop=99)
    drop = PriorEmbeddingLoader(embeddings, batch_size=5, drop_last=True, shuffle=False)
    assert [len(b["image_embed"]) for b in drop] == [5, 5, 5, 5]

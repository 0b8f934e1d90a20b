"""Batches for the training loops, from each data section, as dicts with a resumable position.

Every batch is a dict: ``images`` (b, 3, s, s) in [0, 1] and ``captions`` (list) when the source has them,
``image_embed`` / ``text_embed`` when it carries CLIP embeddings, and ``index`` (b,) for map-style sources (which
sample each epoch is made of; the resume test reads it).  ``epoch_batches(epoch, skip)`` yields the batches of one
epoch for this rank, leaving out the first ``skip`` (already trained on before a resume).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from dalle2_pytorch.runs.config_sections import ClipRetrievalData, ImageFolderData, ToyData, WebdatasetData


def _collate(items: list) -> dict[str, Any]:
    first = items[0]
    if isinstance(first, torch.Tensor):
        return {"images": torch.stack(items)}
    images = torch.stack([item[0] for item in items])
    captions = [item[1] for item in items]
    return {"images": images, "captions": captions}


class _Indexed(Dataset):
    """Wraps a map-style data set so each item also says its index."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


def _loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """A private generator for a DataLoader: creating its iterator draws a worker base seed, which must not come from
    the global stream (a resumed run restores that stream and would otherwise see one draw more or less)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def _collate_indexed(items: list) -> dict[str, Any]:
    batch = _collate([item for _, item in items])
    batch["index"] = torch.tensor([index for index, _ in items])
    return batch


class MapStyleSource:
    """A map-style data set split into train/val; each epoch is a seeded permutation, cut per rank."""

    def __init__(self, dataset: Dataset, *, batch_size: int, val_fraction: float, seed: int, num_workers: int,
                 rank: int = 0, world_size: int = 1) -> None:
        total = len(dataset)
        num_val = int(total * val_fraction)
        if total - num_val < batch_size * world_size:
            raise ValueError(f"data: {total - num_val} training samples are fewer than one batch per process "
                             f"(batch_size={batch_size} x {world_size} processes)")
        self.dataset, self.batch_size, self.seed, self.num_workers = _Indexed(dataset), batch_size, seed, num_workers
        self.rank, self.world_size = rank, world_size
        self.train_indices = torch.arange(num_val, total)
        self.val_indices = torch.arange(0, num_val)

    def num_batches(self) -> int:
        return len(self.train_indices) // (self.batch_size * self.world_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch``, in training order (whole batches only)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = self.train_indices[torch.randperm(len(self.train_indices), generator=generator)]
        used = self.num_batches() * self.batch_size * self.world_size
        return order[:used][self.rank::self.world_size]

    def _loader(self, indices: torch.Tensor, epoch: int = -1) -> DataLoader:
        batches = [indices[i:i + self.batch_size].tolist() for i in range(0, len(indices), self.batch_size)]
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                          collate_fn=_collate_indexed, generator=_loader_generator(self.seed, epoch, self.rank))

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        if hasattr(self.dataset.dataset, "set_epoch"):
            self.dataset.dataset.set_epoch(epoch)
        yield from self._loader(self.epoch_order(epoch)[skip * self.batch_size:], epoch)

    def val_batches(self, limit: int) -> Iterator[dict[str, Any]]:
        if len(self.val_indices) == 0:
            return iter(())
        return iter(list(self._loader(self.val_indices[:limit * self.batch_size])))


class PerCaptionSource(MapStyleSource):
    """A toy-set source whose every batch holds each caption ``batch_size / #captions`` times, each copy a fresh
    random training image of that caption (copy-major).  A CLIP batch then has no false negatives between copies of
    different captions.  An epoch has as many batches as a shuffled epoch would; it is seeded, so resume is exact."""

    def __init__(self, dataset: Dataset, captions: list[str], **settings: Any) -> None:
        super().__init__(dataset, **settings)
        groups: dict[str, list[int]] = {}
        for index in self.train_indices.tolist():
            groups.setdefault(captions[index], []).append(index)
        self.groups = [torch.tensor(members) for _, members in sorted(groups.items())]
        if self.batch_size % len(self.groups):
            raise ValueError(f"data.batches='per_caption': batch_size={self.batch_size} must be a multiple of the "
                             f"{len(self.groups)} distinct captions of the training samples")
        self.copies = self.batch_size // len(self.groups)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + self.rank)
        batches = []
        for _ in range(self.num_batches()):
            picks = [members[torch.randint(len(members), (self.copies,), generator=generator)]
                     for members in self.groups]
            batches.append(torch.stack(picks, dim=1).flatten())
        return torch.cat(batches)


class WebdatasetSource:
    """img2dataset shards with CLIP image embeddings; resumes through the data set's ``set_position``.

    By default each epoch is one pass over the shards, split among the processes (its length is not known in
    advance).  With ``resample_shards`` each process (and loader worker) draws shards with replacement from its own
    seeded stream, and an epoch is ``epoch_samples // (batch_size x processes)`` batches per process."""

    def __init__(self, config: WebdatasetData, rank: int = 0, world_size: int = 1,
                 embed_dim: Optional[int] = None) -> None:
        from dalle2_pytorch.data import ImageEmbeddingDataset

        self.config, self.world_size = config, world_size
        if config.resample_shards and self.num_batches() < 1:
            raise ValueError(f"data.epoch_samples={config.epoch_samples} is less than one batch per process "
                             f"(batch_size={config.batch_size} x {world_size} processes)")

        def make(urls: str, resample: bool) -> ImageEmbeddingDataset:
            return ImageEmbeddingDataset(urls, embedding_folder_url=config.embeddings_url,
                                         text_embedding_folder_url=config.text_embeddings_url,
                                         shard_width=config.shard_width, image_size=config.image_size,
                                         shuffle_buffer=config.shuffle_num, extra_keys=("txt",), seed=config.seed,
                                         rank=rank, world_size=world_size, embed_dim=embed_dim, resample=resample)

        self.train = make(config.urls, config.resample_shards)
        self.val = make(config.val_urls, False) if config.val_urls else None

    def num_batches(self) -> Optional[int]:
        """Batches per epoch and process when shards are resampled; None (until the data runs out) otherwise."""
        if not self.config.resample_shards:
            return None
        return self.config.epoch_samples // (self.config.batch_size * self.world_size)

    @staticmethod
    def _batch(item: tuple) -> dict[str, Any]:
        images, embeds, captions = item
        batch = {"images": images, "captions": list(captions), "image_embed": embeds["img"]}
        if "text" in embeds:
            batch["text_embed"] = embeds["text"]
        return batch

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        self.train.set_position(epoch=epoch, batches_consumed=skip, batch_size=self.config.batch_size)
        loader = DataLoader(self.train, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                            generator=_loader_generator(self.config.seed, epoch, self.train.rank))
        per_epoch = self.num_batches()   # resampled shards never run out: the epoch ends after its batches
        for item in loader if per_epoch is None else itertools.islice(loader, max(per_epoch - skip, 0)):
            yield self._batch(item)

    def val_batches(self, limit: int) -> Iterator[dict[str, Any]]:
        if self.val is None:
            return iter(())
        loader = DataLoader(self.val, batch_size=self.config.batch_size,
                            generator=_loader_generator(self.config.seed, -1, self.val.rank))
        return (self._batch(item) for _, item in zip(range(limit), loader))


class ClipRetrievalSource:
    """clip-retrieval embedding folders for the prior, split by fraction; resumes through ``load_state_dict``."""

    def __init__(self, config: ClipRetrievalData, rank: int = 0, world_size: int = 1,
                 embed_dim: Optional[int] = None) -> None:
        from dalle2_pytorch.data import ClipRetrievalEmbeddings, PriorEmbeddingLoader, make_splits

        embeddings = ClipRetrievalEmbeddings.from_folder(config.path, captions=False, embed_dim=embed_dim)
        splits = make_splits(len(embeddings), config.splits)
        if "train" not in splits:
            raise ValueError(f"data.splits must have a 'train' entry, got {sorted(splits)}")

        def loader(name: str, shuffle: bool):
            start, stop = splits[name]
            return PriorEmbeddingLoader(embeddings, batch_size=config.batch_size, start=start, stop=stop,
                                        shuffle=shuffle, drop_last=shuffle, seed=config.seed, rank=rank,
                                        world_size=world_size)

        self.train = loader("train", True)
        self.val = loader("val", False) if splits.get("val", (0, 0))[1] > splits.get("val", (0, 0))[0] else None

    def num_batches(self) -> int:
        return len(self.train)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        self.train.load_state_dict({"epoch": epoch, "consumed": skip * self.train.batch_size,
                                    "seed": self.train.seed})
        for batch in self.train:
            yield {"text_embed": batch["text_embed"].float(), "image_embed": batch["image_embed"].float()}

    def val_batches(self, limit: int) -> Iterator[dict[str, Any]]:
        if self.val is None:
            return iter(())
        self.val.load_state_dict({"epoch": 0, "consumed": 0, "seed": self.val.seed})
        return ({"text_embed": b["text_embed"].float(), "image_embed": b["image_embed"].float()}
                for _, b in zip(range(limit), self.val))


def build_source(config, rank: int = 0, world_size: int = 1, embed_dim: Optional[int] = None):
    """This rank's source for a data section; ``embed_dim`` (the model's CLIP embedding width) is checked against
    embedding files at once, naming the file whose rows are wider or narrower."""
    if isinstance(config, ToyData):
        dataset = RenderedToy(config)
        settings = dict(batch_size=config.batch_size, val_fraction=config.val_fraction, seed=config.seed,
                        num_workers=config.num_workers, rank=rank, world_size=world_size)
        if config.batches == "per_caption":
            return PerCaptionSource(dataset, dataset.captions, **settings)
        return MapStyleSource(dataset, **settings)
    if isinstance(config, ImageFolderData):
        from dalle2_pytorch.data import ImageFolderDataset

        dataset = ImageFolderDataset(config.path, image_size=config.image_size, captions=config.captions,
                                     random_flip=config.random_flip, seed=config.seed)
        if config.batches == "per_caption":
            if not config.captions:
                raise ValueError("data.batches='per_caption' needs data.captions=true")
            return PerCaptionSource(dataset, dataset.caption_texts, batch_size=config.batch_size,
                                    val_fraction=config.val_fraction, seed=config.seed,
                                    num_workers=config.num_workers, rank=rank, world_size=world_size)
        return MapStyleSource(dataset, batch_size=config.batch_size, val_fraction=config.val_fraction,
                              seed=config.seed, num_workers=config.num_workers, rank=rank, world_size=world_size)
    if isinstance(config, WebdatasetData):
        return WebdatasetSource(config, rank, world_size, embed_dim)
    if isinstance(config, ClipRetrievalData):
        return ClipRetrievalSource(config, rank, world_size, embed_dim)
    raise TypeError(f"unknown data config {type(config).__name__}")


class RenderedToy(Dataset):
    """The toy set of a data section, rendered once into memory, as (image, caption) items (no labels: the judge
    reads captions).  Rendering a shape costs more than a small model's step on it, so it is done only once."""

    def __init__(self, config: ToyData) -> None:
        from dalle2_pytorch.data import ToyShapesDataset

        toy = ToyShapesDataset(num_samples=config.num_samples, image_size=config.image_size, seed=config.seed,
                               with_position=config.with_position, with_size=config.with_size)
        self.images, self.captions, _ = toy.render_range()

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int):
        return self.images[index], self.captions[index]

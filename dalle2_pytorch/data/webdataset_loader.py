"""Decoder training data: img2dataset webdataset shards with CLIP image embeddings.

Embeddings come either from inside the shards (``key.npy``) or from clip-retrieval embedding shards beside them:
with ``shard_width=4`` the image ``00010509.jpg`` of shard ``0001.tar`` takes row 509 of ``img_emb_0001.npy``.
Shards are split per rank (DDP) and per DataLoader worker; damaged data is skipped and counted, never fatal.
"""

from __future__ import annotations

import io
import itertools
import json
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .preprocess import ImagePreprocessor, load_image, to_tensor
from .shards import ReadStats, expand_urls, iterate_tar_samples, load_npy, shard_name, url_exists, warn_skip

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
IMAGE_EMBEDDING_KEYS = ("npy", "img_emb.npy", "emb.npy")
TEXT_EMBEDDING_KEYS = ("text_emb.npy",)


def _seed(*parts: int) -> int:
    """A stable seed from small ints (Python's hash() of str/tuple varies between processes)."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _decode_extra(extension: str, data: bytes) -> Any:
    if extension in ("txt", "text", "caption"):
        return data.decode("utf-8", errors="replace")
    if extension == "json":
        return json.loads(data)
    if extension in ("cls", "cls2"):
        return int(data)
    if extension.endswith("npy"):
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).copy())
    return data


class _EmbeddingShard:
    """Rows of one external embedding file, memory-mapped; ``row(i)`` is None when missing or all zeros."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.array = load_npy(url)
        if self.array.ndim != 2:
            raise ValueError(f"embedding file {url!r} must hold a 2-d array (rows, dim), got shape {self.array.shape}")

    def row(self, index: int) -> torch.Tensor | None:
        if not 0 <= index < len(self.array):
            return None
        row = np.asarray(self.array[index], dtype=np.float32)
        return None if not row.any() else torch.from_numpy(row.copy())


def _embedding_url(folder: str, prefix: str, shard: str) -> str | None:
    """``<folder>/<prefix>_<shard>.npy`` (or inside a ``<prefix>/`` subfolder, as clip-retrieval lays it out)."""
    folder = folder.rstrip("/")
    for candidate in (f"{folder}/{prefix}_{shard}.npy", f"{folder}/{prefix}/{prefix}_{shard}.npy"):
        if url_exists(candidate):
            return candidate
    return None


class ImageEmbeddingDataset(IterableDataset):
    """Iterable of ``(image, {"img": embedding[, "text": embedding]}, *extras)`` from webdataset shards.

    urls: shard URLs, brace notation allowed (``"data/{0000..0099}.tar"``).
    embedding_folder_url: folder with ``img_emb_<shard>.npy``; None reads ``key.npy`` from inside the shards.
    text_embedding_folder_url: folder with ``text_emb_<shard>.npy`` (may be the same folder); None: no text embedding
        unless the shards hold ``key.text_emb.npy``.
    shard_width: digits of the shard number at the start of each key; the rest of the key is the embedding row.
    image_size / img_preproc: resize+centre-crop to ``image_size``, or your own ``PIL image -> tensor`` callable;
        neither: the image as stored (all images must then share a size to be batched).
    shuffle_shards: shuffle the shard order each epoch (the same order on every rank, then split).
    resample: draw shards with replacement forever (an endless stream; stop by step count).
    shuffle_buffer: shuffle samples through a buffer of this size (0: keep the shard order).
    extra_keys: more fields to return after the embeddings, e.g. ("txt", "json").
    rank / world_size: this process's share of the shards; None reads them from torch.distributed when initialised.
    """

    def __init__(self, urls: str | Sequence[str], *, embedding_folder_url: str | None = None,
                 text_embedding_folder_url: str | None = None, shard_width: int = 4, image_size: int | None = None,
                 img_preproc: Callable[[Image.Image], torch.Tensor] | None = None, shuffle_shards: bool = True,
                 resample: bool = False, shuffle_buffer: int = 0, extra_keys: Sequence[str] = (), seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.urls = expand_urls(urls)
        if not self.urls:
            raise ValueError(f"urls={urls!r} expands to no shard")
        if not isinstance(shard_width, int) or shard_width < 1:
            raise ValueError(f"shard_width={shard_width!r} must be a positive int (digits of the shard number)")
        if image_size is not None and img_preproc is not None:
            raise ValueError("give image_size or img_preproc, not both")
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer={shuffle_buffer!r} must be an int >= 0")
        if isinstance(extra_keys, str):
            raise TypeError(f"extra_keys must be a list of extensions, got the str {extra_keys!r}")
        self.embedding_folder_url = embedding_folder_url
        self.text_embedding_folder_url = text_embedding_folder_url
        self.shard_width = shard_width
        self.preprocess = img_preproc or (ImagePreprocessor(image_size=image_size) if image_size else to_tensor)
        self.shuffle_shards = shuffle_shards
        self.resample = resample
        self.shuffle_buffer = shuffle_buffer
        self.extra_keys = tuple(extra_keys)
        self.seed = seed
        self.epoch = 0
        self.batches_consumed = 0
        self.position_batch_size = 1
        self.rank, self.world_size = self._resolve_rank(rank, world_size)
        self.stats = ReadStats()  # per process: with DataLoader workers each worker counts (and warns) for itself

    @staticmethod
    def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
        if rank is None and world_size is None and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        rank, world_size = rank or 0, world_size or 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        return rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards and samples for ``epoch`` and start it from the beginning (call before each epoch)."""
        self.epoch = int(epoch)
        self.batches_consumed = 0

    def set_position(self, *, epoch: int, batches_consumed: int, batch_size: int) -> None:
        """Resume mid-epoch: the next iteration starts after the first ``batches_consumed`` batches of ``epoch``.

        The stream is deterministic given (seed, epoch, ranks, workers), and a DataLoader takes whole batches from
        its workers in turn, so each reader skips its own share: the rest of the epoch holds exactly the batches not
        yet seen (the DataLoader restarts its round-robin at worker 0, so their order can differ).  Exact while every
        worker still has data; if one ran dry before the resume point, a few samples are seen again (never lost).
        The position holds until the next :meth:`set_epoch`, so call that before the following epoch.
        """
        if not isinstance(batches_consumed, int) or batches_consumed < 0:
            raise ValueError(f"batches_consumed={batches_consumed!r} must be an int >= 0")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        self.epoch = int(epoch)
        self.batches_consumed = batches_consumed
        self.position_batch_size = batch_size

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def shards_for_this_worker(self) -> Iterator[str]:
        """This rank's and worker's shards: a slice of one epoch's order, or an endless random draw."""
        worker, num_workers = self._worker()
        if self.resample:
            generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.rank, worker))
            while True:
                yield self.urls[int(torch.randint(len(self.urls), (1,), generator=generator))]
        order = list(self.urls)
        if self.shuffle_shards:
            generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        consumers = self.world_size * num_workers
        if len(order) < consumers and worker == 0 and self.rank == 0:
            warnings.warn(f"only {len(order)} shards for {consumers} readers ({self.world_size} ranks x "
                          f"{num_workers} workers): some readers get no data", RuntimeWarning, stacklevel=2)
        yield from order[self.rank::self.world_size][worker::num_workers]

    def _embedding_for(self, sample: dict[str, Any], shard: _EmbeddingShard | None,
                       in_shard_keys: Sequence[str]) -> torch.Tensor | None:
        if shard is None:
            key = next((k for k in in_shard_keys if k in sample), None)
            if key is None:
                return None
            array = np.load(io.BytesIO(sample[key]), allow_pickle=False)
            return torch.from_numpy(array.astype(np.float32).reshape(-1))
        return shard.row(int(sample["__key__"].split("/")[-1][self.shard_width:]))

    def _open_embedding_shard(self, folder: str | None, prefix: str, url: str) -> _EmbeddingShard | None | bool:
        """The shard's external embeddings, None when embeddings are read in-shard, False when the file is missing."""
        if folder is None:
            return None
        location = _embedding_url(folder, prefix, shard_name(url))
        if location is None:
            warn_skip(self.stats, "unreadable_shards", f"no {prefix}_{shard_name(url)}.npy in {folder!r} for "
                                                       f"shard {url!r}; the shard is skipped")
            return False
        try:
            return _EmbeddingShard(location)
        except (OSError, ValueError) as error:
            warn_skip(self.stats, "unreadable_shards", f"embedding file {location!r} cannot be read ({error}); "
                                                       f"shard {url!r} is skipped")
            return False

    def _samples(self) -> Iterator[tuple]:
        for url in self.shards_for_this_worker():
            image_rows = self._open_embedding_shard(self.embedding_folder_url, "img_emb", url)
            text_rows = self._open_embedding_shard(self.text_embedding_folder_url, "text_emb", url)
            if image_rows is False or text_rows is False:
                continue
            for sample in iterate_tar_samples(url, self.stats):
                item = self._decode(sample, image_rows, text_rows, url)
                if item is not None:
                    self.stats.samples += 1
                    yield item

    def _decode(self, sample: dict[str, Any], image_rows: _EmbeddingShard | None, text_rows: _EmbeddingShard | None,
                url: str) -> tuple | None:
        key = sample["__key__"]
        name = key.split("/")[-1]
        if image_rows is not None or text_rows is not None:
            prefix, row, shard = name[:self.shard_width], name[self.shard_width:], shard_name(url)
            if not (row.isdigit() and (not shard.isdigit() or not prefix.isdigit() or int(prefix) == int(shard))):
                warn_skip(self.stats, "key_mismatches", f"key {name!r} in {url!r} does not start with the shard "
                                                        f"number in {self.shard_width} digits; check shard_width")
                return None
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        if image_key is None:
            warn_skip(self.stats, "missing_images", f"sample {key!r} in {url!r} has no image ({IMAGE_KEYS})")
            return None
        missing = [k for k in self.extra_keys if k not in sample]
        if missing:
            warn_skip(self.stats, "missing_keys", f"sample {key!r} in {url!r} lacks {missing}")
            return None
        try:
            embeddings = {"img": self._embedding_for(sample, image_rows, IMAGE_EMBEDDING_KEYS)}
            wants_text = self.text_embedding_folder_url is not None or any(k in sample for k in TEXT_EMBEDDING_KEYS)
            if wants_text:
                embeddings["text"] = self._embedding_for(sample, text_rows, TEXT_EMBEDDING_KEYS)
        except (OSError, ValueError) as error:
            embeddings = {"img": None}
            warnings.warn(f"embedding of {key!r} in {url!r} cannot be read: {error}", RuntimeWarning, stacklevel=2)
        if any(value is None for value in embeddings.values()):
            warn_skip(self.stats, "missing_embeddings", f"sample {key!r} in {url!r} has no embedding row")
            return None
        try:
            image = self.preprocess(load_image(sample[image_key]))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as error:
            warn_skip(self.stats, "corrupt_images", f"image {key}.{image_key} in {url!r} cannot be decoded ({error})")
            return None
        try:
            extras = tuple(_decode_extra(k, sample[k]) for k in self.extra_keys)
        except (ValueError, UnicodeDecodeError) as error:
            warn_skip(self.stats, "missing_keys", f"sample {key!r} in {url!r}: an extra key does not decode ({error})")
            return None
        return (image, embeddings, *extras)

    def __iter__(self) -> Iterator[tuple]:
        worker, num_workers = self._worker()
        my_batches = self.batches_consumed // num_workers + (1 if worker < self.batches_consumed % num_workers else 0)
        return itertools.islice(self._shuffled(), my_batches * self.position_batch_size, None)

    def _shuffled(self) -> Iterator[tuple]:
        samples = self._samples()
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        worker, _ = self._worker()
        generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.rank, worker, 1))
        buffer: list[tuple] = []
        for item in samples:
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                index = int(torch.randint(len(buffer), (1,), generator=generator))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
        while buffer:
            index = int(torch.randint(len(buffer), (1,), generator=generator))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()


def create_image_embedding_dataloader(tar_url: str | Sequence[str], *, num_workers: int, batch_size: int,
                                      embeddings_url: str | None = None, text_embeddings_url: str | None = None,
                                      shard_width: int = 4, shuffle_num: int | None = None, shuffle_shards: bool = True,
                                      resample_shards: bool = False, image_size: int | None = None,
                                      img_preproc: Callable[[Image.Image], torch.Tensor] | None = None,
                                      extra_keys: Sequence[str] = (), seed: int = 0, pin_memory: bool = False,
                                      drop_last: bool = False) -> DataLoader:
    """A DataLoader over :class:`ImageEmbeddingDataset` yielding ``(images, {"img": (batch, dim), ...})``.

    ``shuffle_num``: size of the sample shuffle buffer (None or 0: no sample shuffling).  The other arguments are
    those of the data set (``embeddings_url`` is its ``embedding_folder_url``).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r} must be an int >= 0")
    dataset = ImageEmbeddingDataset(tar_url, embedding_folder_url=embeddings_url,
                                    text_embedding_folder_url=text_embeddings_url, shard_width=shard_width,
                                    image_size=image_size, img_preproc=img_preproc, shuffle_shards=shuffle_shards,
                                    resample=resample_shards, shuffle_buffer=shuffle_num or 0, extra_keys=extra_keys,
                                    seed=seed)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                      drop_last=drop_last, prefetch_factor=2 if num_workers > 0 else None)

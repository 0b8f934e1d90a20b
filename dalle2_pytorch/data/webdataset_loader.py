"""Decoder training data: img2dataset webdataset shards with CLIP image embeddings.

Embeddings come either from inside the shards (``key.npy``) or from embedding files beside them, in the layouts
:mod:`.embedding_files` reads (per shard: with ``shard_width=4`` the image ``00010509.jpg`` of shard ``0001.tar``
takes row 509 of ``img_emb_1.npy``/``img_emb_0001.npy``; or clip-retrieval's partitions, matched by key through its
metadata).  Shards are split per rank (DDP) and per DataLoader worker; damaged data is skipped and counted, never
fatal, but embeddings of the wrong shape are an error, and so is a reader that yields no sample at all.
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
from .embedding_files import EmbeddingFiles, EmbeddingShapeError
from .shards import NoDataError, ReadStats, expand_urls, iterate_tar_samples, shard_name, warn_skip

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


class ImageEmbeddingDataset(IterableDataset):
    """Iterable of ``(image, {"img": embedding[, "text": embedding]}, *extras)`` from webdataset shards.

    urls: shard URLs, brace notation allowed (``"data/{0000..0099}.tar"``).
    embedding_folder_url: folder with ``img_emb_<n>.npy`` (or its parent); None reads ``key.npy`` from the shards.
    text_embedding_folder_url: folder with ``text_emb_<n>.npy`` (may be the same folder); None: no text embedding
        unless the shards hold ``key.text_emb.npy``.
    embed_dim: the width every embedding row must have (the model's CLIP width); None: the first file's width.
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
                 rank: int | None = None, world_size: int | None = None, embed_dim: int | None = None) -> None:
        super().__init__()
        self.url_spec = urls
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
        if embed_dim is not None and (not isinstance(embed_dim, int) or embed_dim < 1):
            raise ValueError(f"embed_dim={embed_dim!r} must be a positive int (the model's embedding width) or None")
        self.embedding_folder_url = embedding_folder_url
        self.text_embedding_folder_url = text_embedding_folder_url
        self.shard_width = shard_width
        self.embed_dim = embed_dim
        self.embedding_files = {"img": self._embedding_files(embedding_folder_url, "img_emb"),
                                "text": self._embedding_files(text_embedding_folder_url, "text_emb")}
        self._in_shard_width: dict[str, tuple[int, str]] = {}
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

    def _embedding_files(self, folder: str | None, prefix: str) -> EmbeddingFiles | None:
        """The embedding folder's files, checked now: a folder that matches no shard is an error, not an empty run."""
        if folder is None:
            return None
        files = EmbeddingFiles(folder, prefix, shard_width=self.shard_width, embed_dim=self.embed_dim)
        files.peek_width()
        if not any(files.shard_has_file(url) for url in self.urls):
            numbers = sorted({shard_name(url) for url in self.urls})
            raise ValueError(f"no {prefix} file in {files.describe()} belongs to any shard of urls={self.url_spec!r} "
                             f"(shards {numbers[0]}..{numbers[-1]}); the files must be numbered by shard, e.g. "
                             f"{prefix}_{int(numbers[0]) if numbers[0].isdigit() else numbers[0]}.npy for "
                             f"{numbers[0]}.tar")
        return files

    def settings(self) -> str:
        """The data settings in words, for error messages."""
        parts = [f"urls={self.url_spec!r} ({len(self.urls)} shards)", f"shard_width={self.shard_width}"]
        for kind, files in self.embedding_files.items():
            inside = f"key.{'npy' if kind == 'img' else 'text_emb.npy'} inside the shards"
            parts.append(f"{kind} embeddings: " + (files.describe() if files is not None else inside))
        return "; ".join(parts)

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
        yet seen, in the same order (each worker takes over the reader whose turn is next, see :meth:`_worker`).  Exact
        while every worker still has data (always, with ``resample``); if one ran dry before the resume point, a few
        samples are seen again (never lost).
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
        """(the reader this DataLoader worker plays, number of workers).  A DataLoader takes batches from its workers
        in turn starting at worker 0, so after :meth:`set_position` worker w reads as reader (w + batches consumed)
        % workers: worker 0 then plays the reader whose batch comes next, and the rest of the epoch comes in the
        order of an uninterrupted one."""
        info = get_worker_info()
        if info is None:
            return 0, 1
        return (info.id + self.batches_consumed) % info.num_workers, info.num_workers

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

    def _in_shard_embedding(self, kind: str, sample: dict[str, Any], url: str) -> tuple[np.ndarray, str] | None:
        keys = IMAGE_EMBEDDING_KEYS if kind == "img" else TEXT_EMBEDDING_KEYS
        key = next((k for k in keys if k in sample), None)
        if key is None:
            return None
        where = f"{sample['__key__']}.{key} in {url!r}"
        array = np.load(io.BytesIO(sample[key]), allow_pickle=False)
        if array.ndim == 0 or array.ndim > 2 or (array.ndim == 2 and array.shape[0] != 1):
            raise EmbeddingShapeError(f"embedding {where} has shape {array.shape}; expected (width,) or (1, width)")
        width = int(array.shape[-1])
        if self.embed_dim is not None and width != self.embed_dim:
            raise EmbeddingShapeError(f"embedding {where} has shape {array.shape} but the model expects width "
                                      f"{self.embed_dim}")
        first = self._in_shard_width.setdefault(kind, (width, where))
        if width != first[0]:
            raise EmbeddingShapeError(f"embedding {where} has shape {array.shape} but {first[1]}, read first, has "
                                      f"width {first[0]}")
        return array.astype(np.float32).reshape(-1), where

    def _embedding(self, kind: str, sample: dict[str, Any], url: str,
                   shard_files: dict[str, str | None]) -> tuple[np.ndarray, str] | None:
        """(row, where it came from) of one embedding kind of ``sample``; None when it has none."""
        files = self.embedding_files[kind]
        if files is None:
            return self._in_shard_embedding(kind, sample, url)
        location = files.locate(shard_files[kind], sample["__key__"])
        if location is None:
            return None
        row = files.row(location)
        return (row, f"row {location[1]} of {location[0]!r}") if row is not None else None

    def _open_shard_files(self, url: str) -> dict[str, str | None] | None:
        """Per-shard layout: each kind's embedding file for shard ``url``, opened (and shape-checked) up front.
        None (the shard is skipped, counted) when one is missing or unreadable."""
        found: dict[str, str | None] = {}
        for kind, files in self.embedding_files.items():
            found[kind] = None
            if files is None or files.layout != "per_shard":
                continue
            location = files.file_for_shard(url)
            if location is None:
                warn_skip(self.stats, "unreadable_shards", f"no {files.prefix}_{shard_name(url)}.npy (in any zero "
                                                           f"padding) for shard {url!r} in {files.describe()}; "
                                                           f"the shard is skipped")
                return None
            try:
                files.open(location)
            except EmbeddingShapeError:
                raise
            except (OSError, ValueError) as error:
                warn_skip(self.stats, "unreadable_shards", f"embedding file {location!r} cannot be read ({error}); "
                                                           f"shard {url!r} is skipped")
                return None
            found[kind] = location
        return found

    def _samples(self) -> Iterator[tuple]:
        produced, shards_read = 0, 0
        for url in self.shards_for_this_worker():
            shards_read += 1
            shard_files = self._open_shard_files(url)
            if shard_files is not None:
                for sample in iterate_tar_samples(url, self.stats):
                    item = self._decode(sample, shard_files, url)
                    if item is not None:
                        produced += 1
                        self.stats.samples += 1
                        yield item
            if not produced and self.resample and shards_read >= 2 * len(self.urls) + 8:
                break
        if shards_read and not produced:
            skipped = {k: v for k, v in self.stats.as_dict().items() if v and k not in ("shards", "samples")}
            raise NoDataError(f"no sample could be read from the {shards_read} shard(s) this reader was given "
                              f"(skipped: {skipped or 'nothing; the shards are empty'}). Data settings: "
                              f"{self.settings()}")

    def _decode(self, sample: dict[str, Any], shard_files: dict[str, str | None], url: str) -> tuple | None:
        key = sample["__key__"]
        name = key.split("/")[-1]
        if any(f is not None and f.layout == "per_shard" for f in self.embedding_files.values()):
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
        kinds = ["img"]
        if self.text_embedding_folder_url is not None or any(k in sample for k in TEXT_EMBEDDING_KEYS):
            kinds.append("text")
        found: dict[str, tuple[np.ndarray, str] | None] = {}
        try:
            for kind in kinds:
                found[kind] = self._embedding(kind, sample, url, shard_files)
        except EmbeddingShapeError:
            raise
        except (OSError, ValueError) as error:
            warn_skip(self.stats, "missing_embeddings", f"embedding of {key!r} in {url!r} cannot be read: {error}")
            return None
        if any(value is None for value in found.values()):
            warn_skip(self.stats, "missing_embeddings", f"sample {key!r} in {url!r} has no embedding row")
            return None
        for kind, (values, where) in found.items():  # type: ignore[misc]
            if not np.isfinite(values).all():
                warn_skip(self.stats, "nonfinite_embeddings", f"the {kind} embedding of sample {key!r} in {url!r} "
                                                              f"({where}) holds NaN or inf")
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
        embeddings = {kind: torch.from_numpy(values) for kind, (values, _) in found.items()}  # type: ignore[misc]
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
                                      drop_last: bool = False, embed_dim: int | None = None) -> DataLoader:
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
                                    seed=seed, embed_dim=embed_dim)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                      drop_last=drop_last, prefetch_factor=2 if num_workers > 0 else None)

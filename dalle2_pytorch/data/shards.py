"""Reading webdataset-style tar shards with the standard library.

A shard is a tar file whose members are grouped into samples by key: ``00010509.jpg``, ``00010509.txt`` and
``00010509.npy`` form one sample with key ``00010509`` (the key is the member path up to the first dot of its base
name; the rest is the extension).  This is the layout img2dataset writes and webdataset reads.

URLs: local paths, ``file://`` paths, ``pipe:COMMAND`` (read the command's stdout, e.g.
``pipe:aws s3 cp s3://bucket/0001.tar -``), and any other ``scheme://`` URL through fsspec when it is installed.
Brace notation expands to many shards: ``data/{0000..0099}.tar``, ``{a,b}.tar``.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand brace notation: ``"{0000..0002}.tar"`` -> ``["0000.tar", "0001.tar", "0002.tar"]``.

    Numeric ranges keep the zero padding of their first bound; ``{a,b}`` lists alternatives; several braces give
    every combination.  A list of URLs is expanded element by element.
    """
    if isinstance(urls, (list, tuple)):
        return [url for item in urls for url in expand_urls(item)]
    if not isinstance(urls, str):
        raise TypeError(f"urls must be a str or a list of str, got {type(urls).__name__}")
    match = _BRACE.search(urls)
    if match is None:
        return [urls]
    head, body, tail = urls[:match.start()], match.group(1), urls[match.end():]
    numeric = _RANGE.match(body)
    if numeric:
        low, high = int(numeric.group(1)), int(numeric.group(2))
        if high < low:
            raise ValueError(f"brace range {{{body}}} in {urls!r} goes backwards")
        width = len(numeric.group(1))
        options = [str(value).zfill(width) for value in range(low, high + 1)]
    else:
        options = body.split(",")
    return [url for option in options for url in expand_urls(head + option + tail)]


def shard_name(url: str) -> str:
    """The shard's base name without extensions: ``"s3://b/0001.tar"`` -> ``"0001"``; for ``pipe:`` commands the
    last word naming a ``.tar`` file (``"pipe:aws s3 cp s3://b/0001.tar -"`` -> ``"0001"``)."""
    if url.startswith("pipe:"):
        words = url[len("pipe:"):].split()
        url = next((word for word in reversed(words) if ".tar" in word), words[-1] if words else "")
    return url.rstrip("/").split("/")[-1].split(".")[0]


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _fsspec(url: str) -> Any:
    try:
        import fsspec
    except ImportError as error:
        raise ValueError(f"reading {url!r} needs fsspec and its protocol package (e.g. s3fs, gcsfs): "
                         f"pip install fsspec s3fs") from error
    return fsspec


@contextmanager
def open_url(url: str) -> Iterator[BinaryIO]:
    """Open a shard or embedding file for binary reading (see the module docstring for the URL forms)."""
    if url.startswith("pipe:"):
        process = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)
        try:
            yield process.stdout  # type: ignore[misc]
            process.stdout.read()  # type: ignore[union-attr]  # drain the archive's padding: the command ends cleanly
        finally:
            process.stdout.close()  # type: ignore[union-attr]
            code = process.wait()
        if code != 0:
            raise OSError(f"command {url[len('pipe:'):]!r} exited with status {code}")
    elif _is_remote(url):
        with _fsspec(url).open(url, "rb") as handle:
            yield handle
    else:
        with open(_local_path(url), "rb") as handle:
            yield handle


def url_exists(url: str) -> bool:
    if _is_remote(url):
        filesystem, path = _fsspec(url).core.url_to_fs(url)
        return filesystem.exists(path)
    return Path(_local_path(url)).is_file()


def load_npy(url: str) -> np.ndarray:
    """A .npy array; local files are memory-mapped (only the rows used are read)."""
    if _is_remote(url):
        with open_url(url) as handle:
            return np.load(io.BytesIO(handle.read()), allow_pickle=False)
    return np.load(_local_path(url), mmap_mode="r", allow_pickle=False)


@dataclass
class ReadStats:
    """Counts of what was read and what was skipped (never fatal) while iterating shards."""

    shards: int = 0
    samples: int = 0
    truncated_shards: int = 0
    unreadable_shards: int = 0
    corrupt_images: int = 0
    missing_images: int = 0
    missing_embeddings: int = 0
    missing_keys: int = 0
    key_mismatches: int = 0
    nonfinite_embeddings: int = 0

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def skipped(self) -> int:
        """Samples dropped for any reason (truncated/unreadable shards count as one each)."""
        return sum(v for k, v in self.as_dict().items() if k not in ("shards", "samples"))


class NoDataError(RuntimeError):
    """A data reader that was given shards yielded no sample at all: the settings, not the data, are wrong."""


def warn_skip(stats: ReadStats, counter: str, message: str) -> None:
    setattr(stats, counter, getattr(stats, counter) + 1)
    warnings.warn(f"{message} (skipped; {counter}={getattr(stats, counter)})", RuntimeWarning, stacklevel=3)


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/00010509.img.npy"`` -> (``"dir/00010509"``, ``"img.npy"``)."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def iterate_tar_samples(url: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    """Samples of one shard as dicts ``{"__key__", "__url__", extension: bytes, ...}``.

    A shard that cannot be opened is skipped; a truncated or corrupt one yields the samples before the damage (the
    last one with the members read whole) and is then abandoned.  Both are counted and warned.
    """
    stats.shards += 1
    sample: dict[str, Any] | None = None
    members_read = 0
    try:
        with open_url(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, extension = split_member_name(member.name)
                if not extension or key.split("/")[-1].startswith("__"):
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} is cut short")
                members_read += 1
                if sample is not None and sample["__key__"] != key:
                    yield sample
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": url}
                sample[extension] = data
            # tarfile stops quietly when a shard is cut at or inside a header; a whole archive ends with a full
            # zero block, so a short read where the next header should be means the rest of the shard is missing.
            if archive.fileobj.tell() - archive.offset < tarfile.BLOCKSIZE:
                raise tarfile.ReadError("the archive ends without its end-of-archive marker")
        if sample is not None:
            yield sample
    except FileNotFoundError as error:
        warn_skip(stats, "unreadable_shards", f"shard {url!r} not found: {error}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if sample is not None:  # its members were read whole; the decoder checks that none it needs is missing
            yield sample
        counter = "truncated_shards" if members_read else "unreadable_shards"
        warn_skip(stats, counter, f"shard {url!r} is truncated or corrupt ({type(error).__name__}: {error}); "
                                  f"its remaining samples are lost")

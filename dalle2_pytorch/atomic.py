"""Atomic writes of files and folders: a reader (or a process killed mid-save) sees the old or the new, never half.

Files: :func:`atomic_write_bytes` / :func:`atomic_write_with` write to a temporary name beside the target, fsync it,
rename it over the target (``os.replace`` is atomic on POSIX and Windows) and fsync the parent folder.

Folders: ``rename(2)`` cannot replace a non-empty folder, so :func:`atomic_folder` writes the new content into
``.<name>.partial`` beside the target (every file fsynced), then moves the old folder aside to ``.<name>.old``, renames
the staging folder into place and deletes the old one.  A process killed between those two renames leaves only
``.<name>.old``; :func:`recover_interrupted_swap` (run by every folder write and by the readers of checkpoint folders)
renames it back, so the previous folder is never lost.  One writer per folder at a time (the staging name is fixed, so
that every process of a distributed run can write into the same staging folder).

A full disk while writing is a :class:`~dalle2_pytorch.errors.DiskFullError` naming the file.  This module imports
nothing from ``dalle2_pytorch`` but :mod:`dalle2_pytorch.errors`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dalle2_pytorch.errors import writing

__all__ = ["atomic_folder", "atomic_write_bytes", "atomic_write_with", "begin_folder", "commit_folder",
           "fsync_directory", "recover_interrupted_swap"]


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (names created or renamed in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to create the file at a temporary path beside ``path``, then fsync and rename it into place.

    For writers that need a file name (e.g. ``safetensors.torch.save_file``).  The temporary file is removed when
    ``write`` fails; ``path`` is untouched until the rename.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    try:
        with writing(path):
            write(Path(tmp))
            _fsync_file(tmp)
            os.replace(tmp, path)
            fsync_directory(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes writes bytes, got {type(data).__name__}; encode text first")
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


# ----------------------------------------------------------------------------- folders
def _staging(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.partial"


def _aside(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.old"


def recover_interrupted_swap(directory: str | os.PathLike) -> None:
    """Undo what a folder write killed part-way left: ``.<name>.old`` without ``<name>`` is renamed back.

    When both exist the swap had completed and ``.<name>.old`` is deleted.  Safe to call from several processes.
    """
    directory = Path(directory)
    old = _aside(directory)
    if not old.exists():
        return
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        old.rename(directory)
    except OSError:
        if not directory.exists():  # another process may have restored it first; anything else is a real error
            raise
    fsync_directory(directory.parent)


def begin_folder(directory: str | os.PathLike) -> Path:
    """Start an atomic write of ``directory``: recover a previous interrupted swap, return an empty staging folder."""
    directory = Path(directory)
    recover_interrupted_swap(directory)
    staging = _staging(directory)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(folder, name))
        fsync_directory(folder)


def commit_folder(staging: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Finish :func:`begin_folder`: fsync everything in ``staging`` and swap it in for ``directory``."""
    staging, directory = Path(staging), Path(directory)
    if staging != _staging(directory):
        raise ValueError(f"{staging} is not the staging folder of {directory} (expected {_staging(directory)})")
    if not staging.is_dir():
        raise FileNotFoundError(f"{staging} does not exist: call begin_folder({str(directory)!r}) first")
    _fsync_tree(staging)
    old = _aside(directory)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    fsync_directory(directory.parent)
    shutil.rmtree(old, ignore_errors=True)
    return directory


@contextmanager
def atomic_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_folder(d) as tmp:`` write into ``tmp``; on a clean exit it replaces ``d`` atomically.

    When the block raises, the staging folder is deleted and ``d`` keeps its previous content.
    """
    directory = Path(directory)
    staging = begin_folder(directory)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_folder(staging, directory)

"""A folder of images (searched recursively), optionally with same-named ``.txt`` captions, as a torch Dataset.

For unconditional training an item is an image tensor; with ``captions=True`` it is ``(image, caption)``.  A file
that cannot be decoded is skipped with a warning and counted (``num_skipped``): the item is replaced by the next
readable file, so one bad file never stops a run.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dalle2_pytorch.errors import BadDataError

from .captions import captions_for
from .preprocess import ImagePreprocessor, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
UNREADABLE = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)


def list_image_files(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``folder`` (recursive, case-insensitive extensions), sorted for a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory")
    wanted = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions}
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in wanted)


class ImageFolderDataset(Dataset):
    """Images under ``folder`` resized/cropped to ``image_size`` (see :class:`ImagePreprocessor`).

    captions: when True, each image needs a caption — a ``<same name>.txt`` beside it or an entry in the folder's
    ``captions.csv`` / ``captions.jsonl`` (see :mod:`.captions`; checked up front, a missing caption is a ValueError
    listing a few) — and items are ``(image, caption)``.  Random crops/flips are drawn from a generator
    seeded by ``(seed, epoch, index)``, so an item is reproducible; call :meth:`set_epoch` to vary them per epoch.
    """

    def __init__(self, folder: str | os.PathLike, *, image_size: int, captions: bool = False, crop: str = "center",
                 random_flip: bool = False, extensions: Sequence[str] = IMAGE_EXTENSIONS, seed: int = 0) -> None:
        self.folder = Path(folder)
        self.files = list_image_files(folder, extensions)
        if not self.files:
            raise ValueError(f"folder={str(folder)!r} holds no images with extensions {list(extensions)}")
        self.preprocess = ImagePreprocessor(image_size=image_size, crop=crop, random_flip=random_flip)
        self.captions = captions
        self.caption_texts = captions_for(self.folder, self.files) if captions else None
        self.seed = seed
        self.epoch = 0
        self.num_skipped = 0  # counted in the process that reads; with DataLoader workers each worker counts its own
        self.skipped_files: set[str] = set()

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/flips drawn for each item (call once per epoch)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        return generator

    def _read(self, index: int) -> torch.Tensor | tuple[torch.Tensor, str]:
        path = self.files[index]
        image = self.preprocess(load_image(path), self._generator(index))
        if not self.captions:
            return image
        return image, self.caption_texts[index]

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, str]:
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for {len(self.files)} images")
        for offset in range(len(self.files)):
            candidate = (index + offset) % len(self.files)
            try:
                return self._read(candidate)
            except UNREADABLE as error:
                name = str(self.files[candidate])
                if name not in self.skipped_files:
                    self.skipped_files.add(name)
                    self.num_skipped += 1
                    warnings.warn(f"skipping unreadable image {name}: {type(error).__name__}: {error} "
                                  f"({self.num_skipped} skipped so far)", RuntimeWarning, stacklevel=2)
        raise BadDataError(f"no image under {str(self.folder)!r} could be read ({self.num_skipped} unreadable files, "
                           f"e.g. {sorted(self.skipped_files)[0]}): put decodable JPEG/PNG/WebP files there")


@dataclass
class FolderScan:
    """What a captioned folder holds: the readable images with their captions, and the files that could not be read."""

    files: list[Path]
    captions: list[str]
    unreadable: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)   # shorter side of each readable image, in pixels

    @property
    def distinct_captions(self) -> list[str]:
        return sorted(set(self.captions))


def scan_captioned_folder(folder: str | os.PathLike) -> FolderScan:
    """Read every image once: the readable ones with their captions, and the unreadable ones (skipped, counted)."""
    files = list_image_files(folder)
    if not files:
        raise ValueError(f"{folder!r} holds no images (.jpg, .jpeg, .png, .webp)")
    captions = captions_for(folder, files)
    scan = FolderScan([], [])
    for path, caption in zip(files, captions):
        try:
            image = load_image(path)
        except UNREADABLE:
            scan.unreadable.append(str(path))
            continue
        scan.files.append(path)
        scan.captions.append(caption)
        scan.sizes.append(min(image.size))
    if not scan.files:
        raise ValueError(f"none of the {len(files)} images under {folder!r} could be read")
    return scan

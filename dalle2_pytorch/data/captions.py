"""Captions of the images in a folder, from wherever a user keeps them.

A caption comes from ``<image name>.txt`` beside the image, or else from one caption file at the top of the folder:
``captions.csv`` (a header with a file column — ``file``, ``image``, ``filename``, ``path`` or ``image_path`` — and
a ``caption`` or ``text`` column) or ``captions.jsonl`` (one object per line with the same keys).  A file column
holds the image's path relative to the folder, or just its name.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Optional, Sequence


CAPTION_FILES = ("captions.csv", "captions.jsonl")
FILE_KEYS = ("file", "image", "filename", "path", "image_path")
TEXT_KEYS = ("caption", "text")


def _pick(row: dict, keys: Sequence[str], source: str, what: str) -> str:
    for key in keys:
        if key in row and row[key] is not None:
            return str(row[key])
    raise ValueError(f"{source}: a row has no {what} column (one of {list(keys)}); it has {sorted(row)}")


def read_caption_file(folder: str | os.PathLike) -> Optional[dict[str, str]]:
    """``{file as written: caption}`` from the folder's ``captions.csv`` or ``captions.jsonl``; None if it has neither."""
    root = Path(folder)
    found = [root / name for name in CAPTION_FILES if (root / name).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"{root} holds both {CAPTION_FILES[0]} and {CAPTION_FILES[1]}: keep one caption file")
    path = found[0]
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        if path.suffix == ".csv":
            rows = list(csv.DictReader(handle))
        else:
            rows = []
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not a JSON object: {error}") from None
    return {_pick(row, FILE_KEYS, str(path), "file").strip(): _pick(row, TEXT_KEYS, str(path), "caption").strip()
            for row in rows}


def captions_for(folder: str | os.PathLike, files: Sequence[Path]) -> list[str]:
    """The caption of each image: its ``.txt`` beside it, else its entry in the folder's caption file.

    Raises ValueError naming a few images that have neither."""
    root = Path(folder)
    table = read_caption_file(root)
    captions, missing = [], []
    for path in files:
        beside = path.with_suffix(".txt")
        if beside.is_file():
            captions.append(beside.read_text(encoding="utf-8", errors="replace").strip())
            continue
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        caption = None if table is None else table.get(relative, table.get(path.name))
        if caption is None:
            missing.append(str(path))
            captions.append("")
        else:
            captions.append(caption)
    if missing:
        where = (f"nor in {root / CAPTION_FILES[0]} / {CAPTION_FILES[1]}" if table is None
                 else "nor in the folder's caption file")
        raise ValueError(f"{len(missing)} images have no caption (no .txt caption beside them, {where}), "
                         f"e.g. {missing[:3]}")
    return captions

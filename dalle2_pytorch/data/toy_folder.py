"""The toy shapes written to disk as a captioned image folder (``0000.png`` + ``0000.txt``, ...): a stand-in for a
user's own folder in tests, docs and benchmarks of `dalle2 train pipeline`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from dalle2_pytorch.images import save_image

from .toy import ToyShapesDataset


def write_toy_folder(folder: str | os.PathLike, *, num_samples: int, image_size: int = 32, seed: int = 0,
                     captions: Optional[Sequence[str]] = None) -> Path:
    """Write ``num_samples`` toy images with their captions; ``captions``: keep only these captions (drawn in turn,
    each with fresh random images) instead of all 18."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    toy = ToyShapesDataset(num_samples=num_samples * (1 if captions is None else 40), image_size=image_size,
                           seed=seed)
    images, texts, _ = toy.render_range()
    if captions is not None:
        wanted = set(captions)
        missing = wanted - set(texts)
        if missing:
            raise ValueError(f"captions {sorted(missing)} are not toy captions (see ToyShapesDataset.all_captions())")
        keep = [i for i, text in enumerate(texts) if text in wanted][:num_samples]
        images, texts = images[keep], [texts[i] for i in keep]
    for i, (image, text) in enumerate(zip(images, texts)):
        save_image(image, root / f"{i:04d}.png")
        (root / f"{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
    return root

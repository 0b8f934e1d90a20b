"""A small captioned folder of toy shapes on disk (PNG + txt, and one unreadable file), shared by the own-data tests."""

import pytest

from dalle2_pytorch.data.toy_folder import write_toy_folder

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]


@pytest.fixture
def toy_folder(tmp_path):
    folder = write_toy_folder(tmp_path / "images", num_samples=24, image_size=32, captions=CAPTIONS)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "broken.txt").write_text("a red circle")
    return folder

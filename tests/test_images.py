"""dalle2_pytorch.images: tensors to PIL images, grids and PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.images import (captioned_grid, make_grid, save_captioned_grid, save_image, to_pil, to_pil_images,
                                   to_uint8)


def test_to_uint8_maps_the_value_range_and_clamps():
    values = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert to_uint8(values).tolist() == [0, 0, 0, 128, 255, 255]
    assert to_uint8(values, value_range=(-1.0, 1.0)).tolist() == [0, 0, 128, 191, 255, 255]
    with pytest.raises(ValueError, match="high > low"):
        to_uint8(values, value_range=(1.0, 1.0))


def test_to_pil_images_keeps_grey_as_L_and_colour_as_RGB():
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    pictures = to_pil_images(rgb)
    assert len(pictures) == 2 and pictures[0].mode == "RGB" and pictures[0].size == (7, 5)
    expected = (rgb[1].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(pictures[1]), expected)
    grey = to_pil_images(torch.zeros(1, 1, 4, 4))
    assert grey[0].mode == "L"
    with pytest.raises(ValueError, match=r"\(b, 1 or 3, h, w\)"):
        to_pil_images(torch.zeros(3, 4, 4))


def test_to_pil_gives_rgb_even_for_one_channel():
    picture = to_pil(torch.full((1, 2, 3), 1.0))
    assert picture.mode == "RGB" and picture.size == (3, 2) and picture.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_make_grid_places_rows_with_padding():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    grid = make_grid([a, b], padding=1, pad_value=1.0)
    assert grid.shape == (3, 2 * 5 + 1, 2 * 5 + 1)
    assert torch.equal(grid[:, 1:5, 1:5], a[0]) and torch.equal(grid[:, 6:10, 6:10], b[1])
    assert grid[:, 0].eq(1.0).all() and grid[:, 5].eq(1.0).all()
    with pytest.raises(ValueError, match="at least one row"):
        make_grid([])
    with pytest.raises(ValueError, match="must have shape"):
        make_grid([a, torch.zeros(1, 3, 4, 4)])


def test_save_image_and_grids_write_pngs(tmp_path):
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    path = save_image(image, tmp_path / "out" / "img.png", value_range=(-1.0, 1.0))
    expected = ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(path)), expected)
    images = torch.rand(5, 3, 8, 8)
    grid = captioned_grid(images, [f"c {i}" for i in range(5)], columns=2, cell=16)
    assert grid.size == (2 * 20 + 4, 3 * (16 + 14 + 4) + 4)
    written = save_captioned_grid(images, ["x"] * 5, tmp_path / "grid.png", columns=5, cell=16)
    assert Image.open(written).size == (5 * 20 + 4, 16 + 14 + 8)
    with pytest.raises(ValueError, match="5 images but 4 captions"):
        captioned_grid(images, ["x"] * 4)


def test_grid_captions_wrap_instead_of_being_cut():
    from dalle2_pytorch.images import wrap_caption

    caption = "a small red circle at the top left beside a blue square"
    lines = wrap_caption(caption, lambda line: len(line) <= 12)
    assert " ".join(lines) == caption and all(len(line) <= 12 for line in lines) and len(lines) > 1
    assert wrap_caption("abcdefghij", lambda line: len(line) <= 4) == ["abcd", "efgh", "ij"]
    images = torch.rand(2, 3, 8, 8)
    one_line = captioned_grid(images, ["a", "b"], columns=2, cell=96)
    wrapped = captioned_grid(images, [caption, "b"], columns=2, cell=96)
    assert wrapped.size[0] == one_line.size[0]
    assert wrapped.size[1] >= one_line.size[1] + 14   # room for the extra lines, nothing truncated


def test_caption_slug_is_a_safe_file_name(tmp_path):
    from dalle2_pytorch.images import caption_slug

    assert caption_slug("a red circle") == "a_red_circle"
    for caption in ("x/../../f", "..", "/etc/passwd", "a\\b:c*?<>|", "", "  ", "ü/ñ"):
        slug = caption_slug(caption)
        assert slug and "/" not in slug and "\\" not in slug and "." not in slug
        assert (tmp_path / slug).resolve().parent == tmp_path.resolve()
    assert caption_slug("x/../../f") == "x_f"
    assert len(caption_slug("word " * 50)) <= 60

"""Image preprocessing without torchvision: resize, crops, flips, tensors, torch resize."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.data import resize_image_to
from dalle2_pytorch.data.preprocess import (ImagePreprocessor, center_crop, load_image, random_resized_crop,
                                            resize_shorter_side, to_tensor)


def _gradient(width=60, height=40):
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8))


def test_load_image_converts_to_rgb_and_composites_transparency(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    path = tmp_path / "clear.png"
    rgba.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 1)  # a palette PNG (as GIFs and small PNGs are) with a transparent index
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "palette.png", transparency=1)
    loaded = load_image(tmp_path / "palette.png")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 0, 0) and loaded.getpixel((3, 3)) == (255,) * 3
    buffer = io.BytesIO()
    Image.new("L", (3, 5), 128).save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).mode == "RGB"
    with pytest.raises(OSError):
        load_image(b"garbage")


def test_resize_and_center_crop():
    image = resize_shorter_side(_gradient(60, 40), 20)
    assert image.size == (30, 20)
    cropped = center_crop(image, 20)
    assert cropped.size == (20, 20)
    tensor = to_tensor(cropped)
    assert tensor.shape == (3, 20, 20) and tensor.dtype == torch.float32 and 0 <= tensor.min() <= tensor.max() <= 1
    with pytest.raises(ValueError, match="resize first"):
        center_crop(image, 64)


@pytest.mark.parametrize("crop", ["center", "random", "random_resized"])
def test_preprocessor_is_deterministic_given_a_generator(crop):
    preprocess = ImagePreprocessor(image_size=16, crop=crop, random_flip=True)
    image = _gradient()
    first = preprocess(image, torch.Generator().manual_seed(3))
    again = preprocess(image, torch.Generator().manual_seed(3))
    assert first.shape == (3, 16, 16) and torch.equal(first, again)
    if crop != "center":
        outputs = {tuple(preprocess(image, torch.Generator().manual_seed(s))[:, 0, 0].tolist()) for s in range(8)}
        assert len(outputs) > 1


def test_flip_mirrors_the_image():
    image = _gradient(16, 16)
    flipped = {tuple(ImagePreprocessor(image_size=16, random_flip=True)(image, torch.Generator().manual_seed(s))
                     [0, 0, :2].tolist()) for s in range(10)}
    assert len(flipped) == 2  # both orientations occur


def test_random_resized_crop_covers_the_requested_area():
    image = Image.new("RGB", (100, 100))
    out = random_resized_crop(image, 8, scale=(0.25, 0.25), ratio=(1.0, 1.0),
                              generator=torch.Generator().manual_seed(0))
    assert out.size == (8, 8)
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop(image, 8, scale=(0.0, 1.0))


@pytest.mark.parametrize("size", [(10, 40), (40, 10)])
def test_random_resized_crop_falls_back_to_the_centred_largest_square(size):
    """A box of the whole area with aspect 4 never fits a 1:4 or 4:1 image: the crop is the middle square."""
    image = _gradient(*size)
    out = random_resized_crop(image, 8, scale=(1.0, 1.0), ratio=(4.0, 4.0) if size[1] > size[0] else (0.25, 0.25),
                              generator=torch.Generator().manual_seed(0))
    middle = center_crop(image, 10).resize((8, 8), Image.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(middle))


def test_bad_preprocessor_arguments():
    with pytest.raises(ValueError, match="crop"):
        ImagePreprocessor(image_size=16, crop="middle")
    with pytest.raises(ValueError, match="image_size"):
        ImagePreprocessor(image_size=0)


def test_resize_image_to_antialiases_and_keeps_same_size():
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2
    image = checker.float().expand(2, 3, 64, 64)
    small = resize_image_to(image, 8, mode="bilinear")
    assert small.shape == (2, 3, 8, 8)
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.02)  # aliasing would give 0s and 1s
    assert resize_image_to(image, 64) is image
    assert resize_image_to(image[0], (16, 32)).shape == (3, 16, 32)
    assert resize_image_to(small * 3, 16, mode="bilinear", clamp_range=(0, 1)).max() <= 1
    nearest = resize_image_to(image, 8)                        # the default: nearest, as the cascade resizes
    assert set(nearest.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="mode='bicubic'"):
        resize_image_to(image, 8, mode="bicubic")
    with pytest.raises(ValueError, match="size"):
        resize_image_to(image, (8,))

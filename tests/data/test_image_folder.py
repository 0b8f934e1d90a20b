"""A folder of images (with optional captions) as a Dataset; unreadable files skipped and counted."""

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dalle2_pytorch.data.image_folder import ImageFolderDataset, list_image_files


def _folder(root, captions=True):
    (root / "sub").mkdir(parents=True)
    colours = {"a.jpg": (255, 0, 0), "b.PNG": (0, 255, 0), "sub/c.webp": (0, 0, 255), "sub/d.jpeg": (9, 9, 9)}
    for name, colour in colours.items():
        Image.new("RGB", (24, 20), colour).save(root / name)
        if captions:
            (root / name).with_suffix(".txt").write_text(f"caption of {name}\n")
    (root / "notes.md").write_text("not an image")
    return root


def test_lists_images_recursively(tmp_path):
    files = list_image_files(_folder(tmp_path))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.jpg", "b.PNG", "sub/c.webp", "sub/d.jpeg"]


def test_unconditional_and_captioned_items(tmp_path):
    root = _folder(tmp_path)
    plain = ImageFolderDataset(root, image_size=16)
    assert len(plain) == 4 and plain[0].shape == (3, 16, 16)
    assert torch.allclose(plain[0][:, 8, 8], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    captioned = ImageFolderDataset(root, image_size=16, captions=True)
    image, caption = captioned[2]
    assert caption == "caption of sub/c.webp" and image.shape == (3, 16, 16)
    images, captions = next(iter(DataLoader(captioned, batch_size=4)))
    assert images.shape == (4, 3, 16, 16) and len(captions) == 4


def test_random_augmentation_is_reproducible_per_epoch(tmp_path):
    dataset = ImageFolderDataset(_folder(tmp_path), image_size=12, crop="random", random_flip=True, seed=1)
    assert torch.equal(dataset[1], dataset[1])
    first = [dataset[i] for i in range(4)]
    dataset.set_epoch(1)
    dataset.set_epoch(0)
    assert all(torch.equal(a, dataset[i]) for i, a in enumerate(first))


def test_corrupt_files_are_skipped_counted_and_never_fatal(tmp_path):
    root = _folder(tmp_path, captions=False)
    (root / "broken.png").write_bytes(b"\x89PNG but not really")
    dataset = ImageFolderDataset(root, image_size=16)
    assert len(dataset) == 5
    with pytest.warns(RuntimeWarning, match="broken.png"):
        items = [dataset[i] for i in range(len(dataset))]
    assert all(item.shape == (3, 16, 16) for item in items) and dataset.num_skipped == 1


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        ImageFolderDataset(tmp_path / "absent", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", image_size=8)
    root = _folder(tmp_path / "nocaps", captions=False)
    with pytest.raises(ValueError, match="no .txt caption"):
        ImageFolderDataset(root, image_size=8, captions=True)

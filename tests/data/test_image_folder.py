"""A folder of images (with optional captions) as a Dataset; unreadable files skipped and counted."""

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dalle2_pytorch.data.image_folder import ImageFolderDataset, list_image_files
from dalle2_pytorch.data.preprocess import ImagePreprocessor, load_image


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


def _patterned_folder(root, count=6):
    """Images whose every pixel differs, so any crop or flip changes the tensor."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = torch.arange(24 * 20 * 3, dtype=torch.int64).reshape(20, 24, 3) * (i + 3) % 251
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(root / f"{i}.png")
    return root


def test_random_augmentation_changes_with_the_epoch_and_is_reproducible(tmp_path):
    root = _patterned_folder(tmp_path / "images")
    make = lambda: ImageFolderDataset(root, image_size=12, crop="random", random_flip=True, seed=1)  # noqa: E731
    dataset = make()
    epoch0 = torch.stack([dataset[i] for i in range(len(dataset))])
    dataset.set_epoch(1)
    epoch1 = torch.stack([dataset[i] for i in range(len(dataset))])
    changed = [not torch.equal(a, b) for a, b in zip(epoch0, epoch1)]
    assert sum(changed) >= len(dataset) // 2, "most items should be cropped/flipped differently in a new epoch"
    again = make()
    again.set_epoch(1)
    assert torch.equal(torch.stack([again[i] for i in range(len(again))]), epoch1)  # a fresh reader agrees


@pytest.mark.parametrize("crop", ["center", "random", "random_resized"])
def test_the_crop_option_reaches_the_items(tmp_path, crop):
    """Without flips only the crop moves: a centre crop is the same middle square every epoch, the random crops
    move between epochs."""
    root = _patterned_folder(tmp_path / "images", count=1)
    dataset = ImageFolderDataset(root, image_size=12, crop=crop, random_flip=False, seed=1)
    epochs = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        epochs.append(dataset[0])
    if crop == "center":
        preprocess = ImagePreprocessor(image_size=12)
        middle = preprocess(load_image(root / "0.png"))
        assert all(torch.equal(item, middle) for item in epochs)
    else:
        assert len({tuple(item.flatten().tolist()) for item in epochs}) > 1


def test_training_source_gives_each_epoch_its_own_augmentation(tmp_path):
    """The config-driven loops' image-folder source sets the epoch: epoch 1's flips differ from epoch 0's, and
    reading an epoch twice gives the same images."""
    from dalle2_pytorch.runs.config_sections import ImageFolderData
    from dalle2_pytorch.runs.data_sources import build_source

    root = _patterned_folder(tmp_path / "images", count=8)
    source = build_source(ImageFolderData(path=str(root), image_size=16, random_flip=True, val_fraction=0.0,
                                          batch_size=4))

    def by_index(epoch):
        items = {}
        for batch in source.epoch_batches(epoch):
            items.update({int(i): image for i, image in zip(batch["index"], batch["images"])})
        return items

    epoch0, epoch1 = by_index(0), by_index(1)
    assert sorted(epoch0) == sorted(epoch1) == list(range(8))
    assert any(not torch.equal(epoch0[i], epoch1[i]) for i in epoch0)
    assert all(torch.equal(epoch1[i], image) for i, image in by_index(1).items())


def test_truncated_and_empty_files_are_skipped_during_a_training_epoch(tmp_path):
    """A whole epoch of the training source reads past a cut-off PNG and an empty JPEG: every item is a real image
    (one of the readable ones) and the bad files are counted once each."""
    from dalle2_pytorch.runs.config_sections import ImageFolderData
    from dalle2_pytorch.runs.data_sources import build_source

    root = _patterned_folder(tmp_path / "images", count=6)
    good = (root / "0.png").read_bytes()
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "empty.jpg").write_bytes(b"")
    source = build_source(ImageFolderData(path=str(root), image_size=16, val_fraction=0.0, batch_size=4))
    readable = ImageFolderDataset(_patterned_folder(tmp_path / "clean", count=6), image_size=16)
    references = [readable[i] for i in range(len(readable))]
    with pytest.warns(RuntimeWarning, match="skipping unreadable image") as warned:
        images = torch.cat([batch["images"] for batch in source.epoch_batches(0)])
    assert images.shape == (8, 3, 16, 16)
    assert all(any(torch.equal(image, ref) for ref in references) for image in images)
    assert sorted(str(w.message).split()[3].rsplit("/", 1)[-1].rstrip(":") for w in warned) == ["cut.png", "empty.jpg"]

"""The toy judge reads colour, shape, position and size back from images, and is not fooled by noise."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dalle2_pytorch.data.toy import COLOURS, SHAPES, ShapeSpec, ToyShapesDataset, render_shape
from dalle2_pytorch.data.toy_judge import _largest_blob, faithfulness, judge_image, matches


def _items(dataset, count):
    images, captions, labels = zip(*(dataset[i] for i in range(count)))
    return torch.stack(images), list(captions), list(labels)


def test_judge_reads_default_toy_images():
    images, captions, labels = _items(ToyShapesDataset(num_samples=300, seed=9001), 300)  # held-out seed
    assert faithfulness(images, captions) >= 0.98
    assert faithfulness(images, labels) >= 0.98


def test_judge_reads_rich_variant():
    dataset = ToyShapesDataset(num_samples=200, image_size=64, seed=9002, shapes=SHAPES, with_position=True,
                               with_size=True, backgrounds=("black", "white", "gray"))
    images, captions, _ = _items(dataset, 200)
    assert faithfulness(images, captions) >= 0.98


def test_judge_tolerates_blur_and_mild_noise():
    """Generated images are softer and noisier than rendered ones."""
    images, captions, _ = _items(ToyShapesDataset(num_samples=150, seed=9003, shapes=SHAPES), 150)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    noisy = (blurred + 0.05 * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert faithfulness(noisy, captions) >= 0.95


@pytest.mark.parametrize("shape", SHAPES)
def test_highlights_stronger_than_the_shapes_colour_do_not_lower_the_judges_confidence(shape):
    """A pixel holds at most one pixel of shape: a few highlight pixels (further from the background than the
    shape's colour, as a shiny generated image has) leave the verdict and its template IoU exactly as they were."""
    clean = render_shape(ShapeSpec(colour="red", shape=shape, size="large"), 32)
    full = (clean == clean.amax(dim=(1, 2), keepdim=True)).all(dim=0) & (clean[0] > 0.5)  # wholly inside the shape
    inside = full.nonzero()
    highlights = inside[torch.randperm(len(inside), generator=torch.Generator().manual_seed(0))[:len(inside) // 20]]
    shiny = clean.clone()
    shiny[0, highlights[:, 0], highlights[:, 1]] = 1.0  # 220 -> 255 red on 5 % of the shape
    before, after = judge_image(clean), judge_image(shiny)
    assert before.shape == shape and len(highlights) >= 5
    assert after == before


def test_judge_rejects_noise_and_wrong_captions():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(60, 3, 32, 32, generator=generator)
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES[:3]] * 4
    assert faithfulness(noise, captions[:60]) <= 0.05
    assert all(judge_image(image).shape is None for image in noise[:10])
    images, _, labels = _items(ToyShapesDataset(num_samples=60, seed=5), 60)
    colours = list(COLOURS)
    wrong = [f"a {colours[(l['colour'] + 1) % 6]} {SHAPES[l['shape']]}" for l in labels]
    assert faithfulness(images, wrong) == 0.0
    blank = torch.zeros(3, 32, 32)
    assert judge_image(blank).shape is None and not matches(blank, "a red circle")


def test_judge_accepts_pil_uint8_and_collated_labels():
    spec = ShapeSpec(colour="yellow", shape="square", background="white")
    image = render_shape(spec, 48)
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    for form in (image, pil, (image * 255).round().to(torch.uint8)):
        judged = judge_image(form)
        assert (judged.colour, judged.shape, judged.background) == ("yellow", "square", "white")
    batch = {"colour": torch.tensor([3, 3]), "shape": torch.tensor([1, 0])}
    assert faithfulness([image, image], batch) == 0.5
    with pytest.raises(ValueError, match="targets"):
        faithfulness([image], ["a red circle", "a red square"])
    with pytest.raises(ValueError, match="attributes"):
        matches(image, "a yellow square", attributes=("position",))


def test_largest_blob_labels_components():
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:3, 1:3] = True  # 4 pixels
    mask[4:7, 2] = mask[6, 2:7] = mask[4:7, 6] = True  # a U of 9 pixels, joined only at the bottom
    mask[0, 7] = True
    blob = _largest_blob(mask)
    assert blob.sum() == 9 and blob[4, 2] and blob[4, 6] and not blob[1, 1]
    assert _largest_blob(np.zeros((4, 4), dtype=bool)).sum() == 0


def test_judge_reads_blurry_mean_images():
    """A model that regresses to the mean of a caption's images draws a soft shape; it still counts as that shape."""
    images, captions, _ = ToyShapesDataset(num_samples=720, seed=11).render_range()
    groups = {}
    for image, caption in zip(images, captions):
        groups.setdefault(caption, []).append(image)
    means = [torch.stack(group).mean(0) for group in groups.values()]
    assert len(means) == 18 and faithfulness(means, list(groups)) == 1.0

"""The toy shapes data set: deterministic, well-formed, captions match labels, bad arguments rejected."""

import pytest
import torch
from torch.utils.data import DataLoader

from dalle2_pytorch.data.toy import (COLOURS, DEFAULT_SHAPES, POSITIONS, SHAPES, SQUARE_HALF_SIDE, ShapeSpec,
                                     ToyShapesDataset, caption_for, caption_templates, parse_caption, render_shape,
                                     spec_from_labels, vocabulary)


def test_items_are_deterministic_by_seed_and_index():
    first, again = ToyShapesDataset(num_samples=50, seed=3), ToyShapesDataset(num_samples=50, seed=3)
    other = ToyShapesDataset(num_samples=50, seed=4)
    for index in (0, 7, 49):
        image, caption, labels = first[index]
        image2, caption2, labels2 = again[index]
        assert torch.equal(image, image2) and caption == caption2 and labels == labels2
    assert any(not torch.equal(first[i][0], other[i][0]) for i in range(10))
    # Reading out of order gives the same items (no hidden state).
    assert torch.equal(first[7][0], ToyShapesDataset(num_samples=50, seed=3)[7][0])


@pytest.mark.parametrize("image_size", [32, 64])
def test_item_format(image_size):
    dataset = ToyShapesDataset(num_samples=20, image_size=image_size, seed=0)
    image, caption, labels = dataset[5]
    assert image.shape == (3, image_size, image_size) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert set(labels) == {"colour", "shape", "position", "size", "background"}
    names = spec_from_labels(labels)
    assert caption == f"a {names['colour']} {names['shape']}"
    assert parse_caption(caption) == {"colour": names["colour"], "shape": names["shape"]}


def test_default_variant_covers_all_colours_and_shapes_uniformly():
    dataset = ToyShapesDataset(num_samples=1800, seed=1)
    captions = [dataset.caption(dataset.spec(i)) for i in range(len(dataset))]
    assert set(captions) == set(dataset.all_captions())
    assert len(dataset.all_captions()) == len(COLOURS) * len(DEFAULT_SHAPES) == 18
    counts = {c: captions.count(c) for c in set(captions)}
    assert min(counts.values()) > 50  # about 100 each


def test_rich_variant_captions_and_labels_agree():
    dataset = ToyShapesDataset(num_samples=200, image_size=64, seed=2, shapes=SHAPES, with_position=True,
                               with_size=True, backgrounds=("black", "white", "gray"))
    assert len(dataset.all_captions()) == 3 * 2 * 6 * 4 * 5
    for index in range(0, 200, 17):
        _, caption, labels = dataset[index]
        assert parse_caption(caption) == spec_from_labels(labels)


def test_shapes_near_the_edge_are_moved_in_just_far_enough_to_stay_whole():
    """A jittered shape at a side position can reach past the border: its centre is then clipped so that the shape
    is whole and touches the border, no further in.  The shape's box has half side r (0.9 r for squares, the
    renderer's size)."""
    dataset = ToyShapesDataset(num_samples=400, image_size=32, shapes=("circle", "square"), with_position=True,
                               with_size=True, jitter=0.15)
    touching = {"circle": [], "square": []}
    for index in range(len(dataset)):
        spec = dataset.spec(index)
        half = spec.radius * (SQUARE_HALF_SIDE if spec.shape == "square" else 1.0)
        gaps = (spec.center[0] - half, 1 - spec.center[0] - half, spec.center[1] - half, 1 - spec.center[1] - half)
        assert min(gaps) >= -1e-9, (index, spec)  # whole
        if min(gaps) < 1e-9:
            touching[spec.shape].append(index)
    assert len(touching["circle"]) >= 5 and len(touching["square"]) >= 5
    for index in touching["square"]:  # the rendered square fills the border pixels on its clipped side
        image, spec = dataset[index][0], dataset.spec(index)
        colour = torch.tensor(COLOURS[spec.colour], dtype=torch.float32)[:, None] / 255
        x, y = (round(c * 32) for c in spec.center)
        side = 0 if spec.position in ("left", "top") else 31
        border = image[:, y, side] if spec.position in ("left", "right") else image[:, side, x]
        torch.testing.assert_close(border[:, None], colour, atol=1e-6, rtol=0)


def test_render_range_matches_items():
    dataset = ToyShapesDataset(num_samples=10, seed=2)
    images, captions, labels = dataset.render_range(3, 6)
    assert images.shape == (3, 3, 32, 32) and captions == [dataset[i][1] for i in range(3, 6)]
    assert torch.equal(images[1], dataset[4][0])
    assert labels["shape"].tolist() == [dataset[i][2]["shape"] for i in range(3, 6)]
    with pytest.raises(ValueError, match="stop"):
        dataset.render_range(0, 11)


def test_dataloader_collates_items():
    batch = next(iter(DataLoader(ToyShapesDataset(num_samples=8, seed=0), batch_size=4)))
    images, captions, labels = batch
    assert images.shape == (4, 3, 32, 32) and len(captions) == 4 and labels["colour"].shape == (4,)


def test_render_and_caption_helpers():
    spec = ShapeSpec(colour="blue", shape="triangle", position="left", size="small", background="white")
    image = render_shape(spec, 32)
    assert torch.allclose(image[:, 0, -1], torch.ones(3))  # background corner is white
    assert caption_for(spec, with_position=True, with_size=True, with_background=True) == \
        "a small blue triangle on the left on a white background"
    assert caption_for(spec) == "a blue triangle"  # colour and shape only, unless asked
    assert set(vocabulary()["position"]) == set(POSITIONS)
    assert sorted(vocabulary()) == ["background", "colour", "position", "shape", "size"]
    assert caption_templates()[0] == "a {colour} {shape}"


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0), "num_samples"),
    (dict(image_size=4), "image_size"),
    (dict(colours=("red", "purple")), "colours"),
    (dict(shapes="circle"), "shapes"),
    (dict(jitter=0.5), "jitter"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyShapesDataset(**kwargs)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        ToyShapesDataset(num_sample=3)


def test_bad_spec_and_caption():
    with pytest.raises(ValueError, match="colour"):
        ShapeSpec(colour="purple", shape="circle")
    with pytest.raises(ValueError, match="does not name"):
        parse_caption("a photo of a dog")

"""Toy faithfulness: real toy images match their captions, mismatched captions and blank images do not."""

import pytest
import torch

from dalle2_pytorch.data import ToyShapesDataset
from dalle2_pytorch.eval import toy_faithfulness


@pytest.fixture(scope="module")
def toy():
    images, captions, _ = ToyShapesDataset(num_samples=36, image_size=32, seed=0).render_range()
    return images, captions


def test_real_images_match_their_captions(toy):
    images, captions = toy
    scores = toy_faithfulness(images, captions)
    assert scores == {"faithfulness": 1.0, "colour_accuracy": 1.0, "shape_accuracy": 1.0, "no_shape_rate": 0.0}


def test_rolled_captions_and_blank_images_score_low(toy):
    images, captions = toy
    rolled = toy_faithfulness(images, captions[1:] + captions[:1])
    assert rolled["faithfulness"] < 0.4
    blank = toy_faithfulness(torch.zeros_like(images), captions)
    assert blank["faithfulness"] == 0.0 and blank["no_shape_rate"] == 1.0


def test_single_attribute_and_errors(toy):
    images, captions = toy
    assert toy_faithfulness(images, captions, attributes=("colour",)) == {
        "faithfulness": 1.0, "colour_accuracy": 1.0, "no_shape_rate": 0.0}
    with pytest.raises(ValueError, match="position"):
        toy_faithfulness(images, captions, attributes=("position",))
    with pytest.raises(ValueError, match="captions"):
        toy_faithfulness(images, captions[:3])
    with pytest.raises(TypeError, match="single string"):
        toy_faithfulness(images[:1], "a red circle")

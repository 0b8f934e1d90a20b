"""CLIP score with a constructed CLIP: matched captions score higher than shuffled ones."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.clip.adapters import BaseClipAdapter
from dalle2_pytorch.clip.outputs import EmbeddedImage, EmbeddedText
from dalle2_pytorch.data import ToyShapesDataset
from dalle2_pytorch.data.toy import COLOURS
from dalle2_pytorch.eval import ClipImageFeatures, clip_score, clip_similarities, frechet_distance

PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0
COLOUR_NAMES = list(COLOURS)


class ColourClip(BaseClipAdapter):
    """A constructed CLIP for toy images: the embedding of an image is a soft one-hot of its shape's palette colour,
    the embedding of a caption the one-hot of token 1 (a colour id)."""

    def __init__(self):
        super().__init__(nn.Identity())

    dim_latent = property(lambda self: len(COLOUR_NAMES))
    image_size = property(lambda self: 16)
    image_channels = property(lambda self: 3)
    max_text_len = property(lambda self: 4)

    def _embed_text(self, tokens):
        embed = F.one_hot(tokens[:, 1], len(COLOUR_NAMES)).float()
        return EmbeddedText(embed, embed[:, None], torch.ones(len(tokens), 1, dtype=torch.bool))

    def _embed_image(self, images):
        bright = images.amax(dim=1, keepdim=True) > 0.3  # the shape's pixels (the background is black)
        mean = (images * bright).sum((2, 3)) / bright.sum((2, 3)).clamp(min=1)
        logits = -((mean[:, None] - PALETTE) ** 2).sum(-1) / 0.01
        return EmbeddedImage(F.normalize(logits.softmax(-1), dim=-1), None)


def colour_tokenizer(captions, context_length, truncate):
    tokens = torch.zeros(len(captions), context_length, dtype=torch.long)
    tokens[:, 1] = torch.tensor([COLOUR_NAMES.index(caption.split()[1]) for caption in captions])
    return tokens


@pytest.fixture(scope="module")
def toy():
    images, captions, _ = ToyShapesDataset(num_samples=48, image_size=16, seed=0).render_range()
    return images, captions


def test_matched_captions_score_higher_than_shuffled(toy):
    images, captions = toy
    scores = clip_score(images, captions, ColourClip(), tokenizer=colour_tokenizer)
    assert scores["clip_score"] > 0.9
    assert scores["clip_score_gap"] > 0.5
    shuffled = [captions[(i * 7 + 3) % len(captions)] for i in range(len(captions))]
    assert clip_score(images, shuffled, ColourClip(), tokenizer=colour_tokenizer)["clip_score"] < 0.5


def test_per_pair_similarities_accept_tokens_and_batches(toy):
    images, captions = toy
    tokens = colour_tokenizer(captions, 4, True)
    whole = clip_similarities(images, tokens, ColourClip())
    batched = clip_similarities(images, tokens, ColourClip(), batch_size=5)
    assert whole.shape == (48,) and torch.allclose(whole, batched)


def test_clip_features_plug_into_fid(toy):
    images, _ = toy
    features = ClipImageFeatures(ColourClip())
    assert features.num_features == len(COLOUR_NAMES)
    assert abs(frechet_distance(images, images, feature_extractor=features)) < 1e-6


def test_clip_score_errors(toy):
    images, captions = toy
    with pytest.raises(ValueError, match="captions"):
        clip_similarities(images, captions[:3], ColourClip(), tokenizer=colour_tokenizer)
    with pytest.raises(TypeError, match="one string"):
        clip_score(images, "a red circle", ColourClip())
    with pytest.raises(ValueError, match="at least 2"):
        clip_score(images[:1], captions[:1], ColourClip(), tokenizer=colour_tokenizer)
    with pytest.raises(ValueError, match="None"):
        clip_score(images, captions, None)

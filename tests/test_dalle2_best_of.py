"""DALLE2(decoder_num_samples=N, return_best=...): N decoder images per text, the one most similar to the text by
CLIP (as the prior reranks its candidates), or all of them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.images import to_pil_images
from dalle2_pytorch.pipeline_files import PIPELINE_FILE
from tests.serve.tiny_model import FAST_SAMPLING, LATENT, tiny_dalle2

RED = torch.zeros(LATENT)
RED[:3] = torch.tensor([1.0, -1.0, -1.0])


def colour_embed(images: torch.Tensor) -> torch.Tensor:
    """A CLIP whose image embedding is the mean colour (centred), so the reddest image is the one most like "red"."""
    return F.pad(images.mean(dim=(2, 3)) - 0.5, (0, LATENT - 3))


@pytest.fixture
def red_clip(monkeypatch):
    """tiny_dalle2's CLIP made into one where the best image is known: every text embeds as "red"."""
    base = tiny_dalle2()
    clip = base.prior.clip

    def embed_text(tokens):
        return RED.expand(tokens.shape[0], LATENT), torch.zeros(tokens.shape[0], tokens.shape[1], LATENT)

    monkeypatch.setattr(clip, "embed_text", embed_text)
    monkeypatch.setattr(clip, "embed_image", lambda images: (colour_embed(images),))
    return base


def pipeline(base: DALLE2, **kwargs) -> DALLE2:
    return DALLE2(prior=base.prior, decoder=base.decoder, sampling=FAST_SAMPLING, **kwargs).eval()


def test_return_best_keeps_the_image_most_similar_to_the_text(red_clip):
    every = pipeline(red_clip, decoder_num_samples=6, return_best=False)(["a", "b"], seed=3)
    best = pipeline(red_clip, decoder_num_samples=6, return_best=True)(["a", "b"], seed=3)
    assert every.shape == (2, 6, 3, 16, 16) and best.shape == (2, 3, 16, 16)
    for text in range(2):
        redness = F.cosine_similarity(colour_embed(every[text]), RED[None], dim=-1)
        assert redness.max() > redness.min() + 1e-4  # the candidates differ, so the choice matters
        assert torch.equal(best[text], every[text, redness.argmax()])


def test_all_samples_and_pil_groups():
    base = tiny_dalle2()
    dalle2 = pipeline(base, decoder_num_samples=3, return_best=False)
    single = dalle2("a cat", seed=0)
    assert single.shape == (3, 3, 16, 16)
    assert not torch.equal(single[0], single[1])  # each sample has its own noise
    pil = dalle2(["a cat", "a dog"], seed=0, return_pil_images=True)
    assert len(pil) == 2 and all(len(group) == 3 for group in pil) and pil[0][0].size == (16, 16)
    one = pipeline(base)(["a cat"], seed=0)  # the defaults draw one image per text, as before
    assert one.shape == (1, 3, 16, 16)


def test_settings_are_checked_and_saved_only_when_used(tmp_path):
    base = tiny_dalle2()
    with pytest.raises(ValueError, match="decoder_num_samples=0"):
        pipeline(base, decoder_num_samples=0)
    with pytest.raises(TypeError, match="return_best='yes'"):
        pipeline(base, return_best="yes")
    pipeline(base).save_pretrained(tmp_path / "plain")
    plain = json.loads((tmp_path / "plain" / PIPELINE_FILE).read_text())
    assert "decoder_num_samples" not in plain and "return_best" not in plain
    pipeline(base, decoder_num_samples=4, return_best=False).save_pretrained(tmp_path / "four")
    loaded = DALLE2.from_pretrained(tmp_path / "four")
    assert (loaded.decoder_num_samples, loaded.return_best) == (4, False)
    plain_loaded = DALLE2.from_pretrained(tmp_path / "plain")
    assert (plain_loaded.decoder_num_samples, plain_loaded.return_best) == (1, True)


def test_generate_images_gives_num_pil_images_per_text():
    dalle2 = pipeline(tiny_dalle2())
    images = dalle2.generate_images("A cat wearing a hat", num=2, seed=0)
    assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "RGB"
    assert images[0].tobytes() != images[1].tobytes()
    tensor = dalle2(["A cat wearing a hat"] * 2, seed=0)  # the same draws as the pipeline's own call
    assert [im.tobytes() for im in images] == [im.tobytes() for im in to_pil_images(tensor)]
    groups = dalle2.generate_images(["a", "b", "c"], num=2, steps=2)
    assert [len(g) for g in groups] == [2, 2, 2]
    grouped = pipeline(tiny_dalle2(), decoder_num_samples=2, return_best=False).generate_images("a", num=3, steps=2)
    assert len(grouped) == 6
    with pytest.raises(ValueError, match="num=0"):
        dalle2.generate_images("a", num=0)

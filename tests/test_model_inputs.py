"""Inputs the models used to accept silently are errors at the call that gives them: images outside the decoder's
range, NaN/inf images and embeddings, seeds a generator cannot take, image sizes the unets cannot halve, misspelt
keywords of every public constructor, and configs too large to build."""

from __future__ import annotations

import json
import time
import warnings

import pytest
import torch

import dalle2_pytorch
from dalle2_pytorch import CLIP, Decoder, DiffusionPrior, DiffusionPriorNetwork, Unet
from dalle2_pytorch.diffusion.noise import RowGenerators
from dalle2_pytorch.errors import BadFileError
from tests.serve.tiny_model import tiny_dalle2

# every public class of the seed API and one keyword each with a typo
MISSPELT = {
    "CLIP": {"dim_txt": 8}, "Unet": {"dims": 8}, "Decoder": {"unets": None}, "DiffusionPriorNetwork": {"dept": 1},
    "DiffusionPrior": {"timestep": 10}, "DALLE2": {"priors": None}, "SamplingDefaults": {"sampeler": "ddim"},
    "DecoderTrainer": {"learning_rate": 1e-4}, "DALLE2Trainer": {"lrate": 1e-4}, "DiffusionPriorTrainer": {"lrate": 1e-4},
    "VQGanVAETrainer": {"lr_rate": 1e-4}, "VQGanVAE": {"layer": 2}, "NullVQGanVAE": {"channel": 3},
    "OpenAIClipAdapter": {"nme": "ViT-B/32"}, "OpenClipAdapter": {"pretrain": "x"},
}


@pytest.mark.parametrize("name", sorted(MISSPELT))
def test_every_public_constructor_names_a_misspelt_keyword(name):
    cls = getattr(dalle2_pytorch, name)
    with pytest.raises(TypeError, match=rf"{name}\(\) got unknown keyword argument.*Accepted keywords"):
        cls(**MISSPELT[name])


def test_every_public_class_is_in_the_table():
    public = {name for name in dalle2_pytorch._EXPORTS if isinstance(getattr(dalle2_pytorch, name), type)}
    assert public == set(MISSPELT)


@pytest.mark.parametrize("seed", [2 ** 70, -1, 1.5, True])
def test_seeds_a_generator_cannot_take_are_errors(seed):
    pipeline = tiny_dalle2()
    with pytest.raises(ValueError, match=r"seed=.*expected an int from 0 to 2\*\*64 - 1"):
        pipeline("a red circle", seed=seed)
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        RowGenerators.from_seeds([0, seed])
    RowGenerators.from_seeds([0, 2 ** 64 - 1])  # the whole range is accepted


def test_decoder_images_outside_its_range_and_non_finite_inputs_are_errors():
    decoder = tiny_dalle2().decoder
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"values in \[.*\] but this decoder takes images in \[0, 1\].*255"):
        decoder(images * 255, unet_number=2)
    with pytest.warns(UserWarning, match=r"takes images in \[0, 1\]"):  # a warning: the seed README uses randn
        decoder(images * 2 - 1, unet_number=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoder(images * 2 - 1, unet_number=2)   # once per decoder
        decoder(images * 1.2 - 0.1, unet_number=2)  # a resampling filter's small overshoot passes
    nan_images = images.clone()
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image holds 1 NaN or inf value"):
        decoder(nan_images, unet_number=2)
    embed = torch.randn(2, 16)
    embed[1, 3] = float("inf")
    with pytest.raises(ValueError, match="image_embed holds 1 NaN or inf"):
        decoder(images, unet_number=2, image_embed=embed)
    with pytest.raises(ValueError, match="image_embed holds 1 NaN or inf"):
        decoder.sample(image_embed=embed, steps=2)


def test_prior_non_finite_embeddings_are_errors():
    prior = tiny_dalle2().prior
    text, image = torch.randn(2, 16), torch.randn(2, 16)
    bad = text.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="text_embed holds 1 NaN"):
        prior(text_embed=bad, image_embed=image)
    with pytest.raises(ValueError, match="image_embed holds 1 NaN"):
        prior(text_embed=text, image_embed=bad)
    with pytest.raises(ValueError, match=r"text_embed holds \d+ NaN"):
        prior.sample(text_embed=bad, timesteps=2)


def test_an_image_size_the_unets_cannot_halve_fails_at_construction():
    unet = Unet(dim=8, dim_mults=(1, 2, 4), image_embed_dim=8)
    with pytest.raises(ValueError, match=r"unet 1's image size 18 is not a multiple of 4.*use 16 or 20"):
        Decoder(unet=unet, image_size=18, timesteps=10)
    assert Decoder(unet=unet, image_size=16, timesteps=10).image_sizes == (16,)


def test_a_config_too_large_to_build_is_refused_before_allocating(tmp_path, monkeypatch):
    net = DiffusionPriorNetwork(dim=8, depth=1, dim_head=8, heads=2)
    DiffusionPrior(net, image_embed_dim=8, timesteps=10).save_pretrained(tmp_path / "prior")
    config_path = tmp_path / "prior" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"]["net"]["config"].update(dim=65536, depth=64)
    meta["config"]["image_embed_dim"] = 65536
    config_path.write_text(json.dumps(meta))
    started = time.perf_counter()
    with pytest.raises(BadFileError, match=r"config.json: describes a DiffusionPrior of [\d,]+ parameters .*GiB.*"
                                           r"max_parameters= or set DALLE2_MAX_PARAMETERS"):
        DiffusionPrior.from_pretrained(tmp_path / "prior")
    assert time.perf_counter() - started < 30  # counted on the meta device, never allocated

    DiffusionPrior(net, image_embed_dim=8, timesteps=10).save_pretrained(tmp_path / "small")
    with pytest.raises(BadFileError, match="more than the 10 allowed"):
        DiffusionPrior.from_pretrained(tmp_path / "small", max_parameters=10)
    monkeypatch.setenv("DALLE2_MAX_PARAMETERS", "10")
    with pytest.raises(BadFileError, match="more than the 10 allowed"):
        DiffusionPrior.from_pretrained(tmp_path / "small")
    assert isinstance(DiffusionPrior.from_pretrained(tmp_path / "small", max_parameters=10 ** 6), DiffusionPrior)
    assert isinstance(CLIP, type)

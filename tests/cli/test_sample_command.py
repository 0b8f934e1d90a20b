"""`dalle2 sample` loads every pipeline layout through DALLE2.from_pretrained and samples with the saved defaults;
its flags override them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.images import save_image
from tests.serve.tiny_model import (FAST_SAMPLING, save_as_demo_layout, save_as_first_dalle2_layout,
                                    save_tiny_checkpoint, tiny_dalle2)

CAPTION = "a red circle"


def sample_pngs(checkpoint, out, *flags) -> list:
    """`dalle2 sample CAPTION --checkpoint ... --num-images 2 --seed 7 FLAGS`: the pixels of the two images."""
    assert main(["sample", CAPTION, "--checkpoint", str(checkpoint), "--num-images", "2", "--seed", "7",
                 "--out", str(out), *map(str, flags)]) == 0
    paths = sorted(out.glob("*_a_red_circle.png"))
    assert len(paths) == 2 and (out / "grid.png").is_file()
    return [np.asarray(Image.open(path)) for path in paths]


def expected_pngs(pipeline: DALLE2, tmp_path, **settings) -> list:
    """What the CLI must write: the pipeline's images for the same captions and seed, through the same PNG writer."""
    images = pipeline([CAPTION] * 2, generator=torch.Generator().manual_seed(7), **settings)
    return [np.asarray(Image.open(save_image(image, tmp_path / "expected" / f"{i}.png")))
            for i, image in enumerate(images)]


def same(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_sample_uses_the_defaults_in_pipeline_json_and_flags_override_them(tmp_path):
    directory = save_tiny_checkpoint(tmp_path / "dalle2")
    reference = tiny_dalle2()  # the same weights
    saved = sample_pngs(directory, tmp_path / "a")
    assert same(saved, expected_pngs(reference, tmp_path, steps=4, sampler="ddim", cond_scale=[2.0, 1.0],
                                     prior_steps=4, prior_sampler="ddim"))

    spec = json.loads((directory / "pipeline.json").read_text())
    spec["sampling"]["decoder"].update(steps=[2, 3], sampler="euler", cond_scale=[3.0, 1.0])
    (directory / "pipeline.json").write_text(json.dumps(spec))
    edited = sample_pngs(directory, tmp_path / "b")
    assert not same(saved, edited)
    assert same(edited, expected_pngs(reference, tmp_path, steps=[2, 3], sampler="euler", cond_scale=[3.0, 1.0],
                                      prior_steps=4, prior_sampler="ddim"))
    # the flags still win: --steps/--sampler for every unet, --cond-scale for unet 1 (upsamplers keep theirs)
    flagged = sample_pngs(directory, tmp_path / "c", "--steps", 4, "--sampler", "ddim", "--cond-scale", 2.0)
    assert same(flagged, saved)


@pytest.mark.parametrize("layout", ["demo", "first_dalle2"])
def test_sample_reads_the_older_layouts(tmp_path, layout):
    model = tiny_dalle2()
    if layout == "demo":
        directory = save_as_demo_layout(model, tmp_path / "checkpoints", sampling=FAST_SAMPLING)
        settings = dict(steps=4, sampler="ddim", cond_scale=[2.0, 1.0], prior_steps=4, prior_sampler="ddim")
        flags = ()
    else:  # no saved settings: the pipeline's built-in defaults (the decoder's own sampler); keep it quick
        directory = save_as_first_dalle2_layout(model, tmp_path / "dalle2")
        settings, flags = dict(steps=2, sampler="ddim"), ("--steps", 2, "--sampler", "ddim")
    assert same(sample_pngs(directory, tmp_path / "out", *flags), expected_pngs(model, tmp_path, **settings))


def test_sample_errors_name_the_expected_files(tmp_path, capsys):
    assert main(["sample", CAPTION, "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pipeline.json" in err and "prior/config.json" in err


def test_sample_file_names_cannot_escape_the_output_folder(tmp_path):
    directory = save_tiny_checkpoint(tmp_path / "dalle2")
    out = tmp_path / "deep" / "out"
    assert main(["sample", "x/../../f", "a: b?", "--checkpoint", str(directory), "--num-images", "1",
                 "--out", str(out)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert written == [p.relative_to(tmp_path) for p in sorted(out.glob("*.png"))]
    assert sorted(p.name for p in out.glob("*.png")) == ["000_x_f.png", "001_a_b.png", "grid.png"]

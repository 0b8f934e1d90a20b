"""`dalle2 vary / interpolate / edit / inpaint / outpaint` on a tiny saved pipeline: the files they write, that they
run the DALLE2 methods with the flags given, and one clear error for each bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data.image_inputs import box_mask, read_image, read_mask
from dalle2_pytorch.images import save_image
from tests.serve.tiny_model import save_tiny_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("manipulate")
    checkpoint = save_tiny_checkpoint(root / "pipeline")
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):  # 24 px pictures: the commands resize them to the pipeline's 16 px
        save_image(torch.rand(3, 24, 24, generator=generator), root / f"{name}.png")
    mask = np.full((16, 16), 255, dtype=np.uint8)
    mask[4:12, 4:12] = 0
    Image.fromarray(mask).save(root / "mask.png")
    (root / "not_an_image.png").write_text("hello")
    return root, checkpoint


def run(files, *argv) -> int:
    root, checkpoint = files
    return main([*map(str, argv), "--checkpoint", str(checkpoint)])


def written(out) -> list:
    return sorted(p.name for p in out.glob("*.png"))


def pngs(out) -> list:
    """The pixels of the numbered images in ``out`` (not the grid), in order."""
    return [np.asarray(Image.open(path)) for path in sorted(out.glob("[0-9]*.png"))]


def same_pngs(out, images, folder) -> bool:
    """Whether ``out`` holds exactly ``images`` as the CLI writes them (the same PNG writer, read back via ``folder``)."""
    got = pngs(out)
    expected = [np.asarray(Image.open(save_image(image, folder / f"{i}.png"))) for i, image in enumerate(images)]
    return len(got) == len(expected) and all(np.array_equal(x, y) for x, y in zip(got, expected))


def test_every_command_writes_what_its_dalle2_method_returns_and_a_grid(files, tmp_path):
    """Each command's images are its DALLE2 method's output for the flags given (non-default ones where cheap)."""
    root, checkpoint = files
    a, b = root / "a.png", root / "b.png"
    pipeline = DALLE2.from_pretrained(checkpoint)
    pictures = torch.stack([read_image(a, 16), read_image(b, 16)])
    assert run(files, "vary", a, b, "--num", "2", "--steps", "4", "--eta", "0.5", "--seed", "3",
               "--out", tmp_path / "v") == 0
    assert len(written(tmp_path / "v")) == 5 and "grid.png" in written(tmp_path / "v")
    expected = pipeline.variations(pictures, num=2, eta=0.5, seed=3, steps=4)
    assert same_pngs(tmp_path / "v", expected, tmp_path / "ev")
    assert run(files, "interpolate", a, b, "--num", "3", "--steps", "4", "--out", tmp_path / "i") == 0
    assert written(tmp_path / "i") == ["000_t=0.00.png", "001_t=0.50.png", "002_t=1.00.png", "grid.png"]
    expected = pipeline.interpolate(pictures[0], pictures[1], num=3, steps=4, seed=0)
    assert same_pngs(tmp_path / "i", expected, tmp_path / "ei")
    assert run(files, "edit", a, "--from-text", "a red circle", "--to-text", "a blue circle", "--amounts", "0", "0.5",
               "--steps", "4", "--out", tmp_path / "e") == 0
    assert len(written(tmp_path / "e")) == 3
    expected = pipeline.text_diff(pictures[:1], "a red circle", "a blue circle", amounts=[0.0, 0.5], steps=4, seed=0)
    assert same_pngs(tmp_path / "e", expected, tmp_path / "ee")
    assert not np.array_equal(*pngs(tmp_path / "e"))  # the two amounts give two edits
    assert run(files, "inpaint", a, "--mask", root / "mask.png", "--num", "2", "--sampler", "dpmpp_2m",
               "--steps", "3", "--out", tmp_path / "p") == 0
    assert run(files, "outpaint", a, "--scale", "2", "--num", "1", "--steps", "3", "--out", tmp_path / "o") == 0
    outpainted = np.asarray(Image.open(tmp_path / "o" / "000_a_#1.png"))
    assert outpainted.shape == (32, 32, 3)
    source = np.asarray(Image.open(save_image(read_image(a, 16), tmp_path / "source.png")))
    assert np.array_equal(outpainted[8:24, 8:24], source)  # kept bit-exact through the PNG
    inpainted = np.asarray(Image.open(tmp_path / "p" / "000_a_#1.png"))
    keep = read_mask(root / "mask.png", 16).numpy()
    assert np.array_equal(inpainted[keep], source[keep]) and not np.array_equal(inpainted, source)


def test_inpaint_box_is_the_mask_of_that_box(files, tmp_path):
    root, _ = files
    assert run(files, "inpaint", root / "a.png", "--box", "4,4,12,12", "--num", "1", "--steps", "2", "--sampler",
               "ddim", "--seed", "3", "--out", tmp_path / "box") == 0
    assert run(files, "inpaint", root / "a.png", "--mask", root / "mask.png", "--num", "1", "--steps", "2",
               "--sampler", "ddim", "--seed", "3", "--out", tmp_path / "mask") == 0
    assert torch.equal(box_mask((4, 4, 12, 12), 16), read_mask(root / "mask.png", 16))
    same = [np.asarray(Image.open(d / "000_a_#1.png")) for d in (tmp_path / "box", tmp_path / "mask")]
    assert np.array_equal(*same)


@pytest.mark.parametrize("argv, message", [
    (["vary", "{root}/not_an_image.png"], "is not a readable image"),
    (["inpaint", "{root}/a.png", "--mask", "{root}/not_an_image.png"], "mask: "),
    (["inpaint", "{root}/a.png", "--box", "4,4,40,12"], "must lie inside the 16x16 image"),
    (["outpaint", "{root}/a.png", "--pad", "3,0,0,0"], "multiples of"),
    (["edit", "{root}/a.png", "--from-text", "x", "--to-text", "y", "--amounts", "2"], "amounts="),
    (["vary", "{root}/a.png", "--num", "0"], "--num 0"),
])
def test_bad_inputs_are_one_line_errors(files, tmp_path, capsys, argv, message):
    root, _ = files
    assert run(files, *[a.format(root=root) for a in argv], "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

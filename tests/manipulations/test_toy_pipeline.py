"""unCLIP's manipulations on the trained toy pipeline, judged by the toy judge (slow: the pipeline trains once per
cache, see conftest.py).  Rates measured when written are in docs/manipulations.md."""

import pytest
import torch

from dalle2_pytorch.data import judge_image

from .conftest import toy_images

# the first run trains the small demo (about 270 s of CPU; on a loaded 2-core machine up to 20 min of wall time)
pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(2400)]

SOURCES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle"), ("magenta", "square"),
           ("cyan", "triangle")]


def readings(images):
    return [(j.colour, j.shape) for j in map(judge_image, images)]


def rate(hits) -> float:
    hits = list(hits)
    return sum(hits) / len(hits)


def test_variations_keep_the_caption_and_differ(toy_pipeline):
    sources = toy_images(SOURCES)
    out = toy_pipeline.variations(sources, num=4, seed=0, steps=20)
    expected = [spec for spec in SOURCES for _ in range(4)]
    kept = rate(seen == want for seen, want in zip(readings(out), expected))
    groups = out.view(len(SOURCES), 4, -1)
    spread = min((groups[i, a] - groups[i, b]).abs().mean().item() for i in range(len(SOURCES))
                 for a in range(4) for b in range(a + 1, 4))
    print(f"variations: caption kept {kept:.1%}, smallest mean pixel distance between two variations {spread:.4f}")
    assert kept >= 0.9
    assert spread > 0.003


def test_text_diff_changes_colour_or_shape(toy_pipeline):
    circles = toy_images([("red", "circle")] * 8, seed=1)
    blue = readings(toy_pipeline.text_diff(circles, "a red circle", "a blue circle", amounts=[0.75], steps=20))
    square = readings(toy_pipeline.text_diff(circles, "a red circle", "a red square", amounts=[0.75], steps=20))
    blue_rate = rate(seen == ("blue", "circle") for seen in blue)
    colour_kept = rate(colour == "red" for colour, _ in square)
    square_rate = rate(shape == "square" for _, shape in square)
    print(f"text diff: red->blue circle {blue_rate:.1%}; circle->square colour kept {colour_kept:.1%}, "
          f"square {square_rate:.1%}")
    assert blue_rate >= 0.8 and colour_kept >= 0.8


def test_inversion_round_trip_and_interpolation_ends(toy_pipeline):
    sources = toy_images(SOURCES[:4], seed=2)
    embed, noise = toy_pipeline.invert(sources, steps=50)
    rec = toy_pipeline.reconstruct(embed, noise, steps=50)
    error = (rec - sources).abs()
    # unet 1 alone (what is inverted): its DDIM output from the noise against the 16 px input it was inverted from
    stage = toy_pipeline.decoder.stage(1)
    first = stage.sample(None, {"image_embed": embed}, batch=4, cond_scale=toy_pipeline.sampling_defaults.cond_scale[0],
                         sampler="ddim", steps=50, eta=0.0, noise=noise)
    first_error = ((first + 1) / 2 - torch.nn.functional.interpolate(sources, size=16, mode="nearest")).abs()
    print(f"inversion (50 steps): unet 1 mean abs error {first_error.mean():.5f}, max {first_error.max():.4f}; "
          f"final 32 px {error.mean():.4f}, max {error.max():.3f} (pixels in [0, 1])")
    assert first_error.mean() < 0.002 and first_error.max() < 0.05
    assert error.mean() < 0.06
    assert readings(rec) == SOURCES[:4]
    frames = toy_pipeline.interpolate(sources[0], sources[1], num=5, steps=50)
    torch.testing.assert_close(frames[0], rec[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(frames[-1], rec[1], atol=1e-4, rtol=0)


def test_inpainting_with_dpm_solver_regenerates_the_caption(toy_pipeline):
    sources = toy_images(SOURCES, seed=3)
    wanted = SOURCES[1:] + SOURCES[:1]  # each image gets another caption inside the hole
    mask = torch.ones(32, 32, dtype=torch.bool)
    mask[4:28, 4:28] = False  # the hole covers the whole shape; the black border is kept
    out = toy_pipeline.inpaint(sources, mask, text=[f"a {c} {s}" for c, s in wanted], sampler="dpmpp_2m",
                               steps=20, seed=0)
    keep = mask.expand_as(out)
    assert torch.equal(out[keep], sources[keep])
    hits = rate(seen == want for seen, want in zip(readings(out), wanted))
    print(f"inpainting (dpmpp_2m, 20 steps): caption read in the hole {hits:.1%}")
    assert hits >= 0.8


def test_outpainting_extends_the_canvas_and_keeps_the_shape(toy_pipeline):
    sources = toy_images(SOURCES, seed=4)
    out = toy_pipeline.outpaint(sources, pad=(8, 8, 8, 8), seed=0)
    assert out.shape == (len(SOURCES), 3, 48, 48)
    assert torch.equal(out[:, :, 8:40, 8:40], sources)
    hits = rate(seen == want for seen, want in zip(readings(out), SOURCES))
    print(f"outpainting (pad 8 px each side): shape and colour read {hits:.1%}")
    assert hits >= 0.8

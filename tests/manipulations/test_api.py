"""DALLE2's manipulation methods on a tiny random pipeline: shapes, exactness, reproducibility and bad inputs
(the judged behaviour on a trained toy pipeline is in test_toy_pipeline.py)."""

import pytest
import torch

from dalle2_pytorch.manipulations import slerp, text_diff_embeds
from tests.serve.tiny_model import FAST_SAMPLING, tiny_dalle2


@pytest.fixture(scope="module")
def pipeline():
    pipeline = tiny_dalle2()
    pipeline.sampling_defaults = FAST_SAMPLING
    return pipeline


def pictures(batch=2, seed=0):
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_slerp_ends_exactly_and_keeps_unit_norm_between():
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    torch.testing.assert_close(middle.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close((middle * a).sum(-1), (middle * b).sum(-1))  # halfway along the arc
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # parallel rows: no division by sin(0)


def test_text_diff_rotates_towards_the_normalised_difference():
    z = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    z_from, z_to = torch.randn(1, 8), torch.randn(1, 8)
    out = text_diff_embeds(z, z_from, z_to, [0.0, 0.5, 1.0])
    diff = torch.nn.functional.normalize(z_to - z_from, dim=-1)
    assert out.shape == (6, 8)
    torch.testing.assert_close(out[0], z[0])
    torch.testing.assert_close(out[2], diff[0])
    torch.testing.assert_close(out[5], diff[0])
    assert (out[1] * diff[0]).sum() > (z[0] * diff[0]).sum()


def test_invert_reconstruct_and_interpolation_ends(pipeline):
    x = pictures()
    embed, noise = pipeline.invert(x, steps=10)
    assert embed.shape == (2, 16) and noise.shape == (2, 3, 8, 8)
    torch.testing.assert_close(embed, pipeline.embed_image(x))
    rec = pipeline.reconstruct(embed, noise, steps=10, seed=3)
    assert rec.shape == x.shape and 0 <= rec.min() and rec.max() <= 1
    frames = pipeline.interpolate(x[0], x[1], num=4, steps=10, seed=3)
    assert frames.shape == (4, 3, 16, 16)
    torch.testing.assert_close(frames[0], rec[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(frames[-1], rec[1], atol=1e-4, rtol=0)
    assert not torch.allclose(frames[1], frames[0]) and not torch.allclose(frames[1], frames[2])


def test_variations_are_reproducible_and_differ(pipeline):
    x = pictures(1)
    a = pipeline.variations(x, num=3, seed=1, steps=4)
    assert a.shape == (3, 3, 16, 16)
    assert torch.equal(a, pipeline.variations(x, num=3, seed=1, steps=4))
    assert (a[0] - a[1]).abs().mean() > 1e-3
    b = pipeline.variations(x, num=2, seed=1, steps=4, inverted=True)
    assert b.shape == (2, 3, 16, 16)


def test_text_diff_shapes(pipeline):
    out = pipeline.text_diff(pictures(2), "a red circle", "a blue circle", amounts=(0.0, 0.5), steps=4)
    assert out.shape == (4, 3, 16, 16)
    rec = pipeline.reconstruct(*pipeline.invert(pictures(2), steps=4), steps=4)
    torch.testing.assert_close(out[0], rec[0], atol=1e-4, rtol=0)  # θ = 0 is the reconstruction


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler", "heun", "ddpm"])
def test_inpaint_any_sampler_keeps_the_kept_pixels_bit_exact(pipeline, sampler):
    x = pictures(2)
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = False
    out = pipeline.inpaint(x, mask, sampler=sampler, steps=4, seed=0)
    keep = mask.expand_as(out)
    assert torch.equal(out[keep], x[keep]) and not torch.equal(out, x)
    with_text = pipeline.inpaint(x, mask, text="a red circle", sampler=sampler, steps=4, seed=0)
    assert torch.equal(with_text[keep], x[keep])


def test_outpaint_keeps_the_source_and_grows_the_canvas(pipeline):
    x = pictures(1)
    out = pipeline.outpaint(x, scale=2, steps=4, seed=0)
    assert out.shape == (1, 3, 32, 32)
    assert torch.equal(out[:, :, 8:24, 8:24], x)
    out = pipeline.outpaint(x, pad=(8, 0, 0, 8), text="a red circle", steps=4, seed=0)
    assert out.shape == (1, 3, 24, 24) and torch.equal(out[:, :, :16, 8:], x)


def test_bad_inputs_have_one_clear_error_each(pipeline):
    x = pictures(1)
    cases = [
        (lambda: pipeline.inpaint(x, torch.ones(8, 8, dtype=torch.bool)), ValueError, "mask must have shape"),
        (lambda: pipeline.inpaint(x, torch.full((16, 16), 0.5)), ValueError, "mask must be boolean"),
        (lambda: pipeline.inpaint(x, "everything"), TypeError, "mask must be a bool tensor"),
        (lambda: pipeline.variations(torch.rand(1, 4, 16, 16)), ValueError, r"shape \(batch, 3, 16, 16\)"),
        (lambda: pipeline.variations(torch.rand(1, 3, 20, 20)), ValueError, "are 20x20; this pipeline works on 16x16"),
        (lambda: pipeline.variations(x * 255), ValueError, r"must be in \[0, 1\]"),
        (lambda: pipeline.variations((x * 255).to(torch.uint8)), TypeError, "float tensor"),
        (lambda: pipeline.variations(x, num=0), ValueError, "num=0"),
        (lambda: pipeline.variations(x, eta=2.0), ValueError, "eta=2.0"),
        (lambda: pipeline.invert(x, steps=1000), ValueError, "steps=1000"),
        (lambda: pipeline.interpolate(x, x, num=1), ValueError, "num=1"),
        (lambda: pipeline.text_diff(x, "a", "b", amounts=(1.5,)), ValueError, "amounts="),
        (lambda: pipeline.text_diff(x, "", "b"), TypeError, "from_text and to_text"),
        (lambda: pipeline.outpaint(x), ValueError, "exactly one of pad"),
        (lambda: pipeline.outpaint(x, pad=(3, 0, 0, 0)), ValueError, "multiples of"),
        (lambda: pipeline.inpaint(x, torch.ones(16, 16, dtype=torch.bool), text=["a", "b"]), ValueError,
         "one per image"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_a_text_conditioned_decoder_gets_text_encodings(monkeypatch):
    """Manipulations of a decoder whose unet 1 reads text: the text of inpaint/outpaint, else empty captions."""
    from dalle2_pytorch import DALLE2, Decoder, Unet

    tiny = tiny_dalle2()
    clip = tiny.prior.clip
    unets = [Unet(dim=8, image_embed_dim=16, text_embed_dim=16, cond_on_text_encodings=i == 0, cond_dim=8,
                  dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=1, attn_dim_head=8) for i in range(2)]
    decoder = Decoder(unet=tuple(unets), clip=clip, image_sizes=(8, 16), timesteps=50, predict_v=True,
                      condition_on_text_encodings=True)
    with torch.no_grad():  # zero-initialised output layers would ignore every condition
        for parameter in decoder.unets.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.02)
    pipeline = DALLE2(prior=tiny.prior, decoder=decoder, sampling=FAST_SAMPLING).eval()
    seen = []
    original = decoder.conditions.embed_text
    monkeypatch.setattr(decoder.conditions, "embed_text", lambda tokens: seen.append(tokens) or original(tokens))
    x = pictures(1)
    embed, noise = pipeline.invert(x, steps=4)
    assert pipeline.reconstruct(embed, noise, steps=4).shape == (1, 3, 16, 16)
    assert pipeline.variations(x, num=2, steps=4, seed=0).shape == (2, 3, 16, 16)
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = False
    red = pipeline.inpaint(x, mask, text="a red circle", steps=4, seed=0, sampler="ddim")
    blue = pipeline.inpaint(x, mask, text="a blue square", steps=4, seed=0, sampler="ddim")
    assert not torch.equal(red, blue)
    empty = pipeline._tokens([""], clip)
    assert [len(tokens) for tokens in seen] == [1, 1, 2, 1, 1]
    assert all(torch.equal(row, empty[0]) for tokens in seen[:3] for row in tokens)  # invert, reconstruct and variations: no text
    assert torch.equal(seen[-1], pipeline._tokens(["a blue square"], clip))

"""Inpainting with every sampler through the cascade (what each unet sees, and the kept pixels), outpainting
canvases at every unet, and DDIM inversion of a stage."""

import pytest
import torch

from dalle2_pytorch.diffusion import SAMPLERS, NoiseSchedule
from dalle2_pytorch.manipulations import decode, outpaint_canvas, stage_canvas_sizes

from tests.diffusion.analytic import gaussian_denoiser, vp_model_from_ve

from .helpers import embeds, images, tiny_decoder
from .test_decoder_behaviour import record_calls, wake_up


@pytest.mark.parametrize("sampler, resample_times", [(name, None) for name in sorted(SAMPLERS)] + [("ddpm", 2)])
def test_every_sampler_feeds_the_unet_the_known_region_at_its_noise_level(monkeypatch, sampler, resample_times):
    """At every network call of inpainting, the kept region of the unet's input x_t is the known image noised to
    step t: (x_t - sqrt(ᾱ_t) known) / sqrt(1 - ᾱ_t) is standard normal there (RePaint for ddpm, the known region
    re-noised at every evaluation for the others)."""
    torch.manual_seed(0)
    decoder = tiny_decoder(beta_schedule="cosine", timesteps=20, learned_variance=False)
    calls = record_calls(monkeypatch, wake_up(decoder.unets[0]))
    known = images(8, size=8)
    mask = torch.zeros(8, 8, 8, dtype=torch.bool)
    mask[:, :, :6] = True
    out = decoder.sample(embeds(8), inpaint_image=known, inpaint_mask=mask, sampler=sampler, steps=5,
                         inpaint_resample_times=resample_times, generator=torch.Generator().manual_seed(0))
    keep = mask.unsqueeze(1).expand_as(known)
    assert torch.equal(out[keep], known[keep]) and not torch.equal(out, known)
    schedule = NoiseSchedule("cosine", 20)
    assert len(calls) == 5 * (resample_times or (5 if sampler == "ddpm" else 1)) or sampler == "heun"
    for x, t, _, _ in calls:
        a = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
        s = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
        residual = ((x - a * (known * 2 - 1)) / s)[keep]
        assert abs(residual.mean().item()) < 0.15 and 0.85 < residual.std().item() < 1.15, (sampler, t[0].item())


@pytest.mark.parametrize("pad, scale", [((4, 8, 12, 0), None), (None, 2)])
def test_outpainting_draws_the_canvas_at_every_unet_and_keeps_the_source_bit_exact(monkeypatch, pad, scale):
    torch.manual_seed(0)
    decoder = tiny_decoder(2)
    calls = [record_calls(monkeypatch, unet) for unet in decoder.unets]
    source = images(2, size=16)
    canvas, mask, (left, top, right, bottom) = outpaint_canvas(source, pad=pad, scale=scale)
    h, w = 16 + top + bottom, 16 + left + right
    out = decode(decoder, embeds(2), inpaint=(canvas, mask), canvas=(h, w), sampler="dpmpp_2m", steps=3,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, h, w)
    assert torch.equal(out[:, :, top:top + 16, left:left + 16], source)
    assert out[:, :, :top].abs().sum() > 0 or out[:, :, :, :left].abs().sum() > 0
    assert [tuple(c[0][0].shape[-2:]) for c in calls] == [(h // 2, w // 2), (h, w)]  # each unet at its scale
    assert stage_canvas_sizes(decoder, h, w) == [(h // 2, w // 2), (h, w)]


def test_outpainting_rejects_bad_canvases():
    decoder = tiny_decoder(2)
    source = images(1, size=16)
    with pytest.raises(ValueError, match="multiples of 8"):
        stage_canvas_sizes(decoder, 20, 16)
    with pytest.raises(ValueError, match="exactly one"):
        outpaint_canvas(source)
    with pytest.raises(ValueError, match="exactly one"):
        outpaint_canvas(source, pad=(1, 1, 1, 1), scale=2)
    with pytest.raises(ValueError, match="pad="):
        outpaint_canvas(source, pad=(1, -1, 0, 0))
    with pytest.raises(ValueError, match="pad="):
        outpaint_canvas(source, pad=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="scale="):
        outpaint_canvas(source, scale=0.5)


def test_stage_inversion_round_trips_through_deterministic_ddim(monkeypatch):
    """The stage's inversion and its DDIM sampling use the same levels and conditioning: with a unet that is the
    exact denoiser of N(0, 0.5²) data, the round trip is close, and far closer than the classic inversion's."""
    decoder = tiny_decoder(1, predict_x_start=True, learned_variance=False, beta_schedule="cosine")
    stage = decoder.stage(1)
    model = vp_model_from_ve(gaussian_denoiser(0.0, 0.5), stage.schedule)
    monkeypatch.setattr(decoder.unets[0], "forward", lambda x, t, **kwargs: model(x, t))
    target = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).mul(0.5).clamp(-1, 1)
    kwargs = {"image_embed": embeds(2)}

    def round_trip(iters=None):
        noise = stage.invert(target, None, kwargs, steps=20, fixed_point_iters=iters)
        return stage.sample(None, kwargs, batch=2, sampler="ddim", steps=20, eta=0.0, noise=noise)

    refined, classic = (round_trip() - target).abs().max(), (round_trip(0) - target).abs().max()
    assert refined < 0.01 and refined < classic / 5
    with pytest.raises(ValueError, match="eta"):
        stage.sample(None, kwargs, batch=2, sampler="euler", steps=3, eta=0.5)

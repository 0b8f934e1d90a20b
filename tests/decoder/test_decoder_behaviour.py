"""What Decoder.forward and Decoder.sample must do, checked against hand-built computations from the public diffusion
core: the full hybrid loss (simple + VLB), the learned variance in DDPM sampling, classifier-free guidance, each
condition dropped at its own rate, the default sampler, dynamic thresholding and RePaint's intermediate inputs.

The unets are observed by wrapping their ``forward`` on the instance, never through the decoder's private helpers.
"""

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, dynamic_threshold, sample_loop,
                                      static_clamp, vlb_loss)

from .helpers import embeds, images, text_encodings, tiny_decoder


def wake_up(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised weights (the output conv) random values, so every input reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def record_calls(monkeypatch, unet):
    """Wrap ``unet.forward`` on the instance; returns the list of (args, kwargs, output) of every call."""
    calls = []
    original = unet.forward

    def recording(x, time, **kwargs):
        out = original(x, time, **kwargs)
        calls.append((x.detach().clone(), time.detach().clone(), kwargs, out))
        return out

    monkeypatch.setattr(unet, "forward", recording)
    return calls


# ----------------------------------------------------------------------------- training loss
@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_learned_variance_loss_is_the_simple_loss_plus_the_weighted_vlb(objective, monkeypatch):
    """The hybrid objective of Improved DDPM, rebuilt by hand from the unet's recorded input and output."""
    torch.manual_seed(0)
    weight = 0.5
    decoder = tiny_decoder(beta_schedule="cosine", vb_loss_weight=weight, predict_x_start=objective == "x0",
                           predict_v=objective == "v")
    unet = wake_up(decoder.unets[0])
    calls = record_calls(monkeypatch, unet)
    image = images(4, size=8)
    loss = decoder(image, image_embed=embeds(4))
    (x_t, t, _, out), = calls
    schedule = NoiseSchedule("cosine", 100)
    x0 = image * 2 - 1
    a = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
    s = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    noise = (x_t - a * x0) / s
    prediction, raw = out.detach().chunk(2, dim=1)
    target = {"eps": noise, "x0": x0, "v": a * noise - s * x0}[objective]
    pred_x0 = {"eps": (x_t - s * prediction) / a, "x0": prediction, "v": a * x_t - s * prediction}[objective]
    frac = ((raw + 1) / 2).clamp(0, 1)
    log_var = frac * schedule.betas[t].log().view(-1, 1, 1, 1) + \
        (1 - frac) * schedule.posterior_log_variance_clipped[t].view(-1, 1, 1, 1)
    vb = vlb_loss(schedule, x0, x_t, t, pred_x0, log_var)
    expected = F.mse_loss(prediction, target) + weight * vb.mean()
    assert vb.mean() > 1e-3                  # the VLB term is not negligible here
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-4)


def test_only_the_vlb_term_trains_the_variance_channels(monkeypatch):
    """The gradient of the loss with respect to the unet output: the variance channels get one exactly when the VLB
    term is on, and the mean channels get the same one either way (the VLB's mean is detached)."""
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        decoder = tiny_decoder(vb_loss_weight=weight)
        calls = record_calls(monkeypatch, wake_up(decoder.unets[0]))
        torch.manual_seed(1)
        loss = decoder(images(4, size=8), image_embed=embeds(4))
        grads[weight] = torch.autograd.grad(loss, calls[-1][3])[0]
    assert grads[0.0][:, 3:].abs().max() == 0
    assert grads[1.0][:, 3:].abs().max() > 0
    torch.testing.assert_close(grads[0.0][:, :3], grads[1.0][:, :3])


# ----------------------------------------------------------------------------- condition dropout
def classify_drops(unet, x, t, out, emb, enc):
    """Per row of ``out``: (image dropped, text dropped), found by matching each row against the four combinations."""
    combos = {}
    with torch.no_grad():
        for image_dropped in (False, True):
            for text_dropped in (False, True):
                combos[image_dropped, text_dropped] = unet(
                    x, t, image_embed=emb, text_encodings=enc, image_cond_drop_prob=float(image_dropped),
                    text_cond_drop_prob=float(text_dropped))
    keys = list(combos)
    distance = torch.stack([(out - combos[key]).flatten(1).abs().amax(1) for key in keys], dim=1)
    matches = distance < 1e-4
    assert (matches.sum(1) == 1).all(), "every row is exactly one combination of kept/dropped conditions"
    return torch.tensor(keys, dtype=torch.float)[matches.float().argmax(1)]


@pytest.mark.slow
def test_decoder_training_drops_each_condition_at_its_own_rate(monkeypatch):
    torch.manual_seed(0)
    decoder = tiny_decoder(text=True, image_cond_drop_prob=0.2, text_cond_drop_prob=0.7, learned_variance=False)
    unet = wake_up(decoder.unets[0])
    calls = record_calls(monkeypatch, unet)
    batch = 120
    emb, enc = embeds(batch), text_encodings(batch)
    decoder(images(batch, size=8), image_embed=emb, text_encodings=enc)
    (x, t, _, out), = calls
    dropped = classify_drops(unet, x, t, out.detach(), emb, enc)
    image_rate, text_rate = dropped.mean(0).tolist()
    assert image_rate == pytest.approx(0.2, abs=0.12)
    assert text_rate == pytest.approx(0.7, abs=0.13)


# ----------------------------------------------------------------------------- sampling
def hand_built_sample(decoder, emb, *, cond_scale, sampler, steps, seed, x0_transform=static_clamp):
    """A one-unet ε decoder sampled by hand: the guided network ``null + (cond - null) * scale`` in the core sampler."""
    unet = decoder.unets[0]
    schedule = NoiseSchedule("cosine", 20)

    def guided(x, t):
        cond = unet(x, t, image_embed=emb)
        null = unet(x, t, image_embed=emb, image_cond_drop_prob=1.0, text_cond_drop_prob=1.0)
        return null + (cond - null) * cond_scale

    denoiser = ModelDenoiser(guided, schedule, "eps", x0_transform=x0_transform)
    x0 = sample_loop(denoiser, (emb.shape[0], 3, 8, 8), sampler=sampler, steps=steps,
                     generator=torch.Generator().manual_seed(seed))
    return ((x0 + 1) / 2).clamp(0, 1)


def guided_decoder(**kwargs):
    torch.manual_seed(0)
    decoder = tiny_decoder(beta_schedule="cosine", timesteps=20, learned_variance=False, **kwargs)
    wake_up(decoder.unets[0])
    return decoder.eval()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_cond_scale_guides_the_decoder_like_a_hand_built_guided_loop(sampler):
    decoder = guided_decoder()
    emb = embeds(3)
    draw = lambda scale: decoder.sample(emb, cond_scale=scale, sampler=sampler, steps=4,  # noqa: E731
                                        generator=torch.Generator().manual_seed(5))
    plain, guided = draw(1.0), draw(3.0)
    assert (plain - guided).abs().max() > 1e-2
    torch.testing.assert_close(guided, hand_built_sample(decoder, emb, cond_scale=3.0, sampler=sampler, steps=4,
                                                         seed=5), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain, hand_built_sample(decoder, emb, cond_scale=1.0, sampler=sampler, steps=4,
                                                        seed=5), atol=1e-5, rtol=1e-4)


def test_dynamic_thresholding_is_applied_to_every_x0_estimate():
    static = guided_decoder()
    dynamic = guided_decoder(use_dynamic_thres=True, dynamic_thres_percentile=0.9)
    emb = embeds(3)
    draw = lambda d: d.sample(emb, cond_scale=4.0, sampler="ddim", steps=4,  # noqa: E731
                              generator=torch.Generator().manual_seed(2))
    a, b = draw(static), draw(dynamic)
    assert (a - b).abs().max() > 1e-3
    expected = hand_built_sample(dynamic, emb, cond_scale=4.0, sampler="ddim", steps=4, seed=2,
                                 x0_transform=lambda x0: dynamic_threshold(x0, 0.9))
    torch.testing.assert_close(b, expected, atol=1e-5, rtol=1e-4)


def test_default_sampler_is_its_explicit_choice_bitwise():
    """Full ancestral DDPM without steps, DDIM with steps (or sample_timesteps), as documented."""
    decoder = guided_decoder()
    emb = embeds(2)
    draw = lambda d, **kw: d.sample(emb, generator=torch.Generator().manual_seed(1), **kw)  # noqa: E731
    assert torch.equal(draw(decoder), draw(decoder, sampler="ddpm"))
    assert not torch.allclose(draw(decoder, sampler="ddpm"), draw(decoder, sampler="ddim", steps=20))
    assert torch.equal(draw(decoder, steps=3), draw(decoder, sampler="ddim", steps=3))
    assert not torch.allclose(draw(decoder, sampler="ddpm", steps=3), draw(decoder, sampler="ddim", steps=3))
    fewer = guided_decoder(sample_timesteps=3)
    assert torch.equal(draw(fewer), draw(fewer, sampler="ddim", steps=3))


def learned_variance_pair():
    """A fixed-variance decoder and a learned-variance one whose unet returns the first's output plus a chosen
    variance channel (-1: the posterior variance β̃, +1: β)."""
    torch.manual_seed(0)
    fixed = tiny_decoder(timesteps=20, learned_variance=False)
    wake_up(fixed.unets[0])
    learned = tiny_decoder(timesteps=20, learned_variance=True)
    return fixed.eval(), learned.eval()


@pytest.mark.parametrize("fill", [-1.0, 1.0])
def test_ddpm_sampling_uses_the_learned_variance(fill, monkeypatch):
    fixed, learned = learned_variance_pair()
    monkeypatch.setattr(learned.unets[0], "forward", lambda x, t, **kw: torch.cat(
        [fixed.unets[0](x, t, **kw), torch.full_like(x, fill)], dim=1))
    emb = embeds(4)
    draw = lambda d, sampler: d.sample(emb, sampler=sampler, steps=5,  # noqa: E731
                                       generator=torch.Generator().manual_seed(3))
    if fill == -1.0:   # frac 0: exactly the posterior variance that a fixed-variance DDPM uses
        torch.testing.assert_close(draw(learned, "ddpm"), draw(fixed, "ddpm"), atol=1e-5, rtol=1e-4)
    else:              # frac 1: the larger β, other samples
        assert (draw(learned, "ddpm") - draw(fixed, "ddpm")).abs().max() > 1e-2
    # DDIM is deterministic: the variance channels do not matter to it
    torch.testing.assert_close(draw(learned, "ddim"), draw(fixed, "ddim"), atol=1e-5, rtol=1e-4)



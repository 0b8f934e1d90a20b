"""Each wrapped Karlo model behind our denoiser interface gives what the diffusers model (and UnCLIPScheduler's x0)
gives for the same inputs, and its guidance is UnCLIPPipeline's formula."""

import pytest
import torch

from dalle2_pytorch.diffusion import learned_step_log_variance
from dalle2_pytorch.karlo.denoisers import (SchedulerSettings, TextEncoding, decoder_conditioning, decoder_model_fn,
                                            prior_model_fn, super_res_model_fn, upscale_low_res)
from dalle2_pytorch.karlo.stages import KarloTextEncoder
from tests.karlo.conftest import float64_tables

TIMESTEPS = (0, 130, 500, 870)
PROMPTS = ["a red cat", "blue square"]


def encodings(components):
    """UnCLIPPipeline's own prompt encoding (unconditional rows first) as (null, cond) TextEncodings."""
    from diffusers import UnCLIPPipeline

    pipe = UnCLIPPipeline(**components)
    embeds, hidden, mask = pipe._encode_prompt(PROMPTS, torch.device("cpu"), 1, True)
    both = TextEncoding(embeds, hidden, mask)
    half = len(PROMPTS)
    return TextEncoding(*(x[:half] for x in both)), TextEncoding(*(x[half:] for x in both))


def vp_input(shape, t, schedule, seed=0):
    """A noisy x_t (VP) and our (x_ve, σ) for the same point."""
    x_vp = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    sigma = schedule.sigmas[t]
    return x_vp, x_vp * (1 + sigma ** 2).sqrt(), sigma


def our_x0(denoiser, x_vp, x_ve, sigma, t):
    """Our denoiser at step t from x_vp (the diffusers model's own input), and the same through the samplers' entry
    (x_ve, σ), which only adds the float32 rounding of x_ve -> x_vp (amplified by guidance at high noise)."""
    denoised = denoiser.denoise_vp(x_vp, torch.full((x_vp.shape[0],), t))
    via_sigma = denoiser.denoise(x_ve, sigma)
    assert torch.allclose(via_sigma.x0, denoised.x0, atol=1e-4, rtol=1e-4)
    return denoised


def scheduler_x0(scheduler, output, t, x_vp):
    """UnCLIPScheduler's clamped x0 estimate for a model output at step t."""
    return scheduler.step(output, t, x_vp, prev_timestep=t - 1 if t > 0 else None,
                          generator=torch.Generator().manual_seed(0)).pred_original_sample


def test_text_encoder_matches_unclip_prompt_encoding(karlo_components):
    null, cond = encodings(karlo_components)
    ours = KarloTextEncoder(karlo_components["text_encoder"], karlo_components["tokenizer"])
    mine = ours(PROMPTS, torch.device("cpu"))
    for a, b in zip(mine, cond):
        assert torch.equal(a, b)
    assert all(torch.allclose(a.float(), b.float(), atol=1e-6) for a, b in zip(ours([""], torch.device("cpu")).expand(2), null))
    ids, mask = ours.tokens(PROMPTS)
    assert torch.equal(ours.mask_of(ids), mask)  # token ids given as a tensor get the same mask


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_prior_denoiser_matches_diffusers(karlo_components, scale):
    prior, scheduler = karlo_components["prior"], karlo_components["prior_scheduler"]
    settings = SchedulerSettings.from_config(scheduler.config)
    assert (settings.objective, settings.clip_range) == ("x0", 5.0)
    null, cond = encodings(karlo_components)
    denoiser = settings.denoiser(prior_model_fn(prior, cond, null, scale))
    for t in TIMESTEPS:
        x_vp, x_ve, sigma = vp_input((2, prior.config.embedding_dim), t, denoiser.schedule, seed=t)
        with torch.no_grad():
            both = TextEncoding(*(torch.cat([a, b]) for a, b in zip(null, cond)))
            out = prior(torch.cat([x_vp, x_vp]), timestep=torch.tensor(t), proj_embedding=both.embeds,
                        encoder_hidden_states=both.hidden, attention_mask=both.mask).predicted_image_embedding
            uncond, text = out.chunk(2)
            expected = uncond + scale * (text - uncond)  # UnCLIPPipeline's prior guidance
            ours = our_x0(denoiser, x_vp, x_ve, sigma, t).x0
        assert (ours - scheduler_x0(scheduler, expected, t, x_vp)).abs().max() < 1e-5
        assert (ours - text.clamp(-5, 5)).abs().max() > 1e-3 or scale == 1  # guidance changed it


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_decoder_denoiser_and_variance_match_diffusers(karlo_components, scale):
    unet, text_proj = karlo_components["decoder"], karlo_components["text_proj"]
    scheduler = karlo_components["decoder_scheduler"]
    settings = SchedulerSettings.from_config(scheduler.config)
    assert settings.variance_type == "learned_range"
    null, cond = encodings(karlo_components)
    image_embed = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    guided = scale != 1
    conditioning = decoder_conditioning(text_proj, image_embed, cond, null, guided)
    denoiser = settings.denoiser(decoder_model_fn(unet, conditioning, scale, learned_variance=True))
    with torch.no_grad():
        text = TextEncoding(*(torch.cat([a, b]) for a, b in zip(null, cond))) if guided else cond
        hidden, additive = text_proj(image_embeddings=image_embed, prompt_embeds=text.embeds,
                                     text_encoder_hidden_states=text.hidden, do_classifier_free_guidance=guided)
        mask = torch.nn.functional.pad(text.mask, (text_proj.clip_extra_context_tokens, 0), value=True)
    schedule64 = type(scheduler).from_config(scheduler.config)
    float64_tables(schedule64)
    for t in TIMESTEPS:
        x_vp, x_ve, sigma = vp_input((2, 3, 8, 8), t, denoiser.schedule, seed=t)
        with torch.no_grad():
            x_in = torch.cat([x_vp, x_vp]) if guided else x_vp
            out = unet(sample=x_in, timestep=torch.tensor(t), encoder_hidden_states=hidden, class_labels=additive,
                       attention_mask=mask).sample
            if guided:  # UnCLIPPipeline: guide ε, keep the conditional branch's variance
                uncond, text_out = out.chunk(2)
                out = torch.cat([uncond[:, :3] + scale * (text_out[:, :3] - uncond[:, :3]), text_out[:, 3:]], dim=1)
            denoised = our_x0(denoiser, x_vp, x_ve, sigma, t)
        assert (denoised.x0 - scheduler_x0(schedule64, out, t, x_vp)).abs().max() < 1e-5
        if t > 0:  # the learned-range log-variance of the step t -> t - 1
            expected = schedule64._get_variance(t, prev_timestep=t - 1, predicted_variance=out[:, 3:])
            sigma_to = denoiser.schedule.sigmas[t - 1]
            ours_ve = learned_step_log_variance(denoised.variance_frac, sigma, sigma_to)  # of x_ve = x_vp / √ᾱ
            ours = ours_ve.double() - torch.log1p(sigma_to.double() ** 2)
            assert torch.allclose(ours, expected.double(), rtol=1e-5, atol=1e-6)  # float32 σ: 2e-6 relative


def test_super_res_uses_first_model_then_last_at_step_zero(karlo_components):
    first, last = karlo_components["super_res_first"], karlo_components["super_res_last"]
    scheduler = karlo_components["super_res_scheduler"]
    settings = SchedulerSettings.from_config(scheduler.config)
    low_res = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    upscaled = upscale_low_res(low_res, 16)
    assert upscaled.shape == (2, 3, 16, 16)
    denoiser = settings.denoiser(super_res_model_fn(first, last, upscaled))
    for t in TIMESTEPS:
        x_vp, x_ve, sigma = vp_input((2, 3, 16, 16), t, denoiser.schedule, seed=t)
        model = last if t == 0 else first
        with torch.no_grad():
            out = model(sample=torch.cat([x_vp, upscaled], dim=1), timestep=torch.tensor(t)).sample
            ours = our_x0(denoiser, x_vp, x_ve, sigma, t).x0
        assert (ours - scheduler_x0(scheduler, out, t, x_vp)).abs().max() < 1e-5
    # a batch whose rows sit at different steps uses each row's model
    model_fn = super_res_model_fn(first, last, upscaled)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        mixed = model_fn(x, torch.tensor([0, 500]))
        for row, t in ((0, 0), (1, 500)):
            alone = super_res_model_fn(first, last, upscaled[row:row + 1])(x[row:row + 1], torch.tensor([t]))
            assert torch.allclose(mixed[row:row + 1], alone, atol=1e-5)


def test_scheduler_settings_validate_configs():
    assert SchedulerSettings.from_config({"clip_sample": False}).clip_range is None
    with pytest.raises(ValueError, match="squaredcos_cap_v2"):
        SchedulerSettings.from_config({"beta_schedule": "linear"})
    with pytest.raises(ValueError, match="prediction_type"):
        SchedulerSettings.from_config({"prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="variance_type"):
        SchedulerSettings.from_config({"variance_type": "fixed_large"})

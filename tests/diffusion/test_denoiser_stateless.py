"""The denoiser is stateless (the loop threads self-conditioning), one default-sampler rule, and the
zero-SNR progress report."""

import pytest
import torch

from dalle2_pytorch.diffusion import (Denoised, ModelDenoiser, NoiseSchedule, default_sampler, repaint_sample_loop,
                                      sample_loop, self_conditioning_estimate)

from .analytic import gaussian_denoiser, vp_model_from_ve


def _self_conditioning_variance_model(sched):
    base = vp_model_from_ve(gaussian_denoiser(0.3, 0.8), sched)

    def model_fn(x, t, self_cond=None):
        out = base(x, t) if self_cond is None else base(x, t) + 0.1 * self_cond
        return out, torch.sigmoid(x)
    return model_fn


def test_denoise_returns_x0_and_variance_and_call_returns_x0():
    sched = NoiseSchedule("cosine", 20)
    den = ModelDenoiser(_self_conditioning_variance_model(sched), sched, "x0", self_condition=True)
    x, sigma = torch.randn(3, 2), sched.sigmas[10]
    out = den.denoise(x, sigma)
    assert isinstance(out, Denoised) and out.variance_frac.shape == x.shape
    torch.testing.assert_close(den(x, sigma), out.x0)
    with_cond = den.denoise(x, sigma, self_cond=torch.ones_like(x))
    assert not torch.allclose(with_cond.x0, out.x0)  # the previous estimate reaches the network
    torch.testing.assert_close(den.denoise(x, sigma).x0, out.x0)  # and leaves nothing behind
    assert not hasattr(den, "last_x0") and not hasattr(den, "last_variance_frac")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun", "repaint"])
def test_one_denoiser_serves_two_loops_at_once(sampler):
    """A loop run inside another (same denoiser object) changes neither result."""
    sched = NoiseSchedule("linear", 30)
    inner_model = _self_conditioning_variance_model(sched)

    def run(den, seed):
        g = torch.Generator().manual_seed(seed)
        if sampler == "repaint":
            mask = torch.zeros(1, 4)
            mask[:, :2] = 1
            return repaint_sample_loop(den, (5, 4), torch.ones(5, 4), mask, resample_times=2, steps=6, generator=g)
        return sample_loop(den, (5, 4), sampler=sampler, steps=6, generator=g)

    alone_a = run(ModelDenoiser(inner_model, sched, "x0", self_condition=True), 0)
    alone_b = run(ModelDenoiser(inner_model, sched, "x0", self_condition=True), 1)
    nested: dict = {}

    def model_fn(x, t, self_cond=None):
        if "b" not in nested:  # at loop A's first evaluation, run loop B to the end with the same denoiser
            nested["b"] = None
            nested["b"] = run(shared, 1)
        return inner_model(x, t, self_cond)

    shared = ModelDenoiser(model_fn, sched, "x0", self_condition=True)
    torch.testing.assert_close(run(shared, 0), alone_a, atol=0, rtol=0)
    torch.testing.assert_close(nested["b"], alone_b, atol=0, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler"])
def test_zero_snr_schedule_reports_each_step_once(sampler):
    sched = NoiseSchedule("linear", 40, zero_terminal_snr=True)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched), sched, "v" if sampler == "ddpm" else "x0")
    calls = []
    sample_loop(den, (2, 3), sampler=sampler, steps=8, generator=torch.Generator().manual_seed(0),
                callback=calls.append)
    assert torch.isinf(calls[0]["sigma"])  # the zero-SNR step is step 0 ...
    assert [c["i"] for c in calls] == list(range(8)) and {c["total"] for c in calls} == {8}  # ... and only it


def test_default_sampler_rule():
    rule = lambda sampler, steps, sample_timesteps=None: default_sampler(
        sampler, steps, sample_timesteps=sample_timesteps, num_timesteps=100)
    assert rule(None, None) == ("ddpm", 100)  # nothing given: the full schedule, ancestrally
    assert rule(None, 100) == ("ddpm", 100)
    assert rule(None, 20) == ("ddim", 20)  # any shorter run: DDIM
    assert rule(None, None, sample_timesteps=10) == ("ddim", 10)  # the model's sample_timesteps count as given
    assert rule(None, 30, sample_timesteps=10) == ("ddim", 30)  # steps win over sample_timesteps
    assert rule("heun", None) == ("heun", 50) and rule("ddpm", None) == ("ddpm", 100)  # a sampler's own default
    assert default_sampler("euler", None, sample_timesteps=None, num_timesteps=8) == ("euler", 8)
    assert rule("dpmpp_2m", 7, sample_timesteps=10) == ("dpmpp_2m", 7)
    assert rule("dpm++", 7) == ("dpmpp_2m", 7)  # aliases come back canonical
    with pytest.raises(ValueError, match="sampler='dpm3'.*choose one of"):
        rule("dpm3", None)
    with pytest.raises(ValueError, match="steps=101 is more than the 100 training timesteps"):
        rule(None, 101)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        rule("ddim", 0)


def test_self_conditioning_estimate_draws_one_coin_and_detaches():
    sched = NoiseSchedule("cosine", 10)
    x_t, t = torch.randn(4, 3), torch.randint(0, 10, (4,))
    weight = torch.ones(1, requires_grad=True)
    first_pass = lambda: x_t * weight
    assert self_conditioning_estimate(first_pass, sched, "x0", x_t, t, enabled=False) is None
    assert self_conditioning_estimate(first_pass, sched, "x0", x_t, t, enabled=True, prob=0.0) is None
    out = self_conditioning_estimate(first_pass, sched, "x0", x_t, t, enabled=True, prob=1.0,
                                     x0_transform=lambda x0: x0.clamp(-0.5, 0.5))
    torch.testing.assert_close(out, x_t.clamp(-0.5, 0.5))
    assert not out.requires_grad
    eps = self_conditioning_estimate(lambda: torch.zeros_like(x_t), sched, "eps", x_t, t, enabled=True, prob=1.0)
    torch.testing.assert_close(eps, x_t / sched.sqrt_alphas_cumprod[t][:, None])  # objective-aware
    torch.manual_seed(0)
    hits = sum(self_conditioning_estimate(first_pass, sched, "x0", x_t, t, enabled=True) is not None
               for _ in range(400))
    assert 150 < hits < 250

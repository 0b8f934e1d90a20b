"""Samplers reach the data distribution and converge to the ODE solution at their order."""

import math

import pytest
import torch

from dalle2_pytorch.diffusion import (SAMPLERS, ModelDenoiser, NoiseSchedule, karras_sigmas, sample_dpmpp_2m,
                                      sample_euler, sample_heun, sample_ddim, sample_loop, sampling_sigmas)

from tests.diffusion.analytic import gaussian_denoiser, mixture_denoiser, vp_model_from_ve


@pytest.mark.parametrize("sampler,steps", [("ddpm", 200), ("ddim", 50), ("dpmpp_2m", 25), ("euler", 100), ("heun", 25)])
def test_sampler_matches_mixture_distribution(sampler, steps):
    """Through the whole stack (ModelDenoiser + sample_loop) on a 2-mode mixture: mean, variance, mode mass."""
    sched = NoiseSchedule("cosine", 200)
    means, std = [-2.0, 1.5], 0.3
    denoiser = ModelDenoiser(vp_model_from_ve(mixture_denoiser(means, std), sched), sched, objective="x0")
    g = torch.Generator().manual_seed(0)
    x = sample_loop(denoiser, (4000, 1), sampler=sampler, steps=steps, generator=g)
    true_mean = sum(means) / 2
    true_var = std ** 2 + sum((m - true_mean) ** 2 for m in means) / 2
    assert x.mean().item() == pytest.approx(true_mean, abs=0.1)
    assert x.var().item() == pytest.approx(true_var, rel=0.08)
    assert (x > 0).float().mean().item() == pytest.approx(0.5, abs=0.04)
    near = torch.minimum((x + 2).abs(), (x - 1.5).abs())
    assert near.std().item() < 0.45  # samples sit on the modes, not between them


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_objectives_give_same_samples_through_denoiser(objective):
    sched = NoiseSchedule("linear", 100)
    ve = gaussian_denoiser(0.5, 0.2)
    x0_model = vp_model_from_ve(ve, sched)

    def model_fn(x_vp, t):
        x0 = x0_model(x_vp, t)
        a = sched.sqrt_alphas_cumprod[t][:, None]
        s = sched.sqrt_one_minus_alphas_cumprod[t][:, None]
        eps = (x_vp - a * x0) / s
        return eps if objective == "eps" else a * eps - s * x0

    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(1))
    ref = sample_loop(ModelDenoiser(x0_model, sched, "x0"), (64, 1), sampler="ddim", steps=20, noise=noise)
    out = sample_loop(ModelDenoiser(model_fn, sched, objective), (64, 1), sampler="ddim", steps=20, noise=noise)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def _ode_errors(sampler_fn, steps_list, mu=0.3, s=0.5, sigma_max=20.0):
    """Max error against the exact probability-flow solution x(0) = mu + (x_T - mu) s / sqrt(s² + σ_max²)."""
    x_T = torch.linspace(-3, 3, 33, dtype=torch.float64).unsqueeze(1) * math.sqrt(s ** 2 + sigma_max ** 2) + mu
    exact = mu + (x_T - mu) * s / math.sqrt(s ** 2 + sigma_max ** 2)
    errors = []
    for n in steps_list:
        sigmas = torch.cat([karras_sigmas(0.01, sigma_max, n), torch.zeros(1, dtype=torch.float64)])
        out = sampler_fn(gaussian_denoiser(mu, s), x_T.clone(), sigmas)
        errors.append((out - exact).abs().max().item())
    return errors


@pytest.mark.parametrize("sampler_fn,order", [(sample_euler, 1), (sample_ddim, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)])
def test_convergence_order(sampler_fn, order):
    errors = _ode_errors(sampler_fn, [16, 32, 64, 128])
    # observed order over three doublings: log2 of the error ratio per doubling
    observed = math.log2(errors[0] / errors[-1]) / 3
    assert order - 0.3 < observed < order + 0.6, errors
    assert all(errors[i + 1] < errors[i] for i in range(3)), errors


def test_second_order_samplers_beat_first_order_at_equal_steps():
    first = _ode_errors(sample_euler, [32])[0]
    for fn in (sample_heun, sample_dpmpp_2m):
        assert _ode_errors(fn, [32])[0] < first / 5


def test_ddim_eta_one_equals_ddpm_posterior():
    sched = NoiseSchedule("linear", 50)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched), sched, "x0")
    a = sample_loop(den, (8, 2), sampler="ddpm", steps=50, generator=torch.Generator().manual_seed(3))
    b = sample_loop(den, (8, 2), sampler="ddim", steps=50, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_seeded_sampling_is_reproducible_and_callback_sees_every_step():
    sched = NoiseSchedule("cosine", 100)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched), sched, "x0")
    seen = []
    a = sample_loop(den, (4, 3, 2, 2), sampler="ddpm", steps=10, generator=torch.Generator().manual_seed(7),
                    callback=lambda info: seen.append(info["i"]))
    b = sample_loop(den, (4, 3, 2, 2), sampler="ddpm", steps=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and seen == list(range(10))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_reports_each_step_with_the_step_count(sampler):
    sched = NoiseSchedule("cosine", 100)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched), sched, "x0")
    seen = []
    out = sample_loop(den, (2, 3), sampler=sampler, steps=6, generator=torch.Generator().manual_seed(0),
                      callback=lambda info: seen.append((info["i"], info["total"], info["x"])))
    assert [(i, total) for i, total, _ in seen] == [(i, 6) for i in range(6)]
    assert torch.equal(seen[-1][2], out)  # the last report is the sample


def test_zero_terminal_snr_schedule_samples_with_v_objective():
    sched = NoiseSchedule("linear", 100, zero_terminal_snr=True)
    den = ModelDenoiser(vp_model_from_ve(gaussian_denoiser(1.0, 0.5), sched), sched, "x0")
    x = sample_loop(den, (4000, 1), sampler="ddim", steps=30, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert x.mean().item() == pytest.approx(1.0, abs=0.05) and x.std().item() == pytest.approx(0.5, rel=0.1)


def test_sampling_sigmas_come_from_the_schedule():
    sched = NoiseSchedule("cosine", 1000)
    for spacing in ("trailing", "karras"):
        sig = sampling_sigmas(sched, 20, spacing)
        assert sig[-1] == 0 and (sig[:-1] > sig[1:]).all()
        for s in sig[:-1]:
            assert torch.isclose(sched.sigmas, s, rtol=1e-6).any()
    full = sampling_sigmas(sched, 1000, "trailing")
    torch.testing.assert_close(full[:-1], sched.sigmas.flip(0))


def test_bad_sampler_arguments_are_named():
    sched = NoiseSchedule("cosine", 10)
    den = ModelDenoiser(lambda x, t: x, sched, "x0")
    with pytest.raises(ValueError, match="sampler='dpm3'.*choose one of"):
        sample_loop(den, (1, 2), sampler="dpm3")
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        sample_loop(den, (1, 2), sampler="ddim", steps=0)
    with pytest.raises(ValueError, match="steps=11 is more than the 10 training timesteps"):
        sample_loop(den, (1, 2), sampler="ddpm", steps=11)
    with pytest.raises(ValueError, match="eta"):
        sample_loop(den, (1, 2), sampler="heun", eta=0.5)
    with pytest.raises(ValueError, match="objective"):
        ModelDenoiser(lambda x, t: x, sched, "noise")
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp_2m", "euler", "heun"}


def test_ancestral_step_is_accurate_from_a_huge_sigma():
    """From cosine's σ_T ~ 2e4, σ_up is within 1e-6 of σ_to: σ_down² = σ_to² - σ_up² must not cancel in float32
    (it was 4 % off, which moved Karlo's first prior step by 1e-4)."""
    from dalle2_pytorch.diffusion.samplers import ancestral_step

    sigma_from, sigma_to = torch.tensor(20291.17), torch.tensor(15.25586)
    down, up = ancestral_step(sigma_from, sigma_to)
    exact_down = sigma_to.double() ** 2 / sigma_from.double()  # η = 1: σ_down = σ_to² / σ_from
    assert down.dtype == up.dtype == torch.float32
    assert abs(down.double() - exact_down) / exact_down < 1e-5

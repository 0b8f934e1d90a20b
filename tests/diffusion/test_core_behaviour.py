"""The diffusion core against hand-computed values: the step and input a network sees, the visited steps and the
DDPM step variance from a learned interpolation."""

import pytest
import torch

from dalle2_pytorch.diffusion import ModelDenoiser, NoiseSchedule, sample_loop, sampling_sigmas


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_denoiser_gives_the_network_its_training_step_and_vp_input(objective):
    schedule = NoiseSchedule("cosine", 50)
    calls = []
    out_value = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))

    def network(x_vp, t):
        calls.append((x_vp, t))
        return out_value

    denoiser = ModelDenoiser(network, schedule, objective)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for step in (0, 7, 31, 49):
        sigma = schedule.sigmas[step]
        x0 = denoiser(x, sigma)
        x_vp, t = calls[-1]
        assert t.tolist() == [step] * 3
        torch.testing.assert_close(x_vp, x / (1 + sigma ** 2).sqrt())
        a, s = schedule.sqrt_alphas_cumprod[step], schedule.sqrt_one_minus_alphas_cumprod[step]
        expected = {"eps": (x_vp - s * out_value) / a, "x0": out_value, "v": a * x_vp - s * out_value}[objective]
        torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler, steps", [("ddim", 4), ("ddpm", 4), ("euler", 3)])
def test_samplers_visit_the_evenly_spaced_training_steps_from_the_last(sampler, steps):
    schedule = NoiseSchedule("cosine", 20)
    seen = []

    def network(x_vp, t):
        seen.append(t[0].item())
        return torch.zeros_like(x_vp)

    sample_loop(ModelDenoiser(network, schedule, "eps"), (2, 3), sampler=sampler, steps=steps,
                generator=torch.Generator().manual_seed(0))
    assert seen == torch.linspace(19, 0, steps).round().long().tolist()


@pytest.mark.parametrize("frac", [0.0, 0.5, 1.0])
def test_ddpm_step_variance_follows_the_learned_interpolation(frac):
    """With x0 predicted as 0 every DDPM step is x_s = c x_t + noise of variance exp(frac log β + (1-frac) log β̃)
    in VP units (β = 1 - ᾱ_t/ᾱ_s, β̃ = β (1 - ᾱ_s)/(1 - ᾱ_t)); the variance of the samples follows the recursion."""
    schedule = NoiseSchedule("cosine", 30)
    network = lambda x, t: (torch.zeros_like(x), torch.full_like(x, frac))  # noqa: E731
    states = []
    sample_loop(ModelDenoiser(network, schedule, "x0"), (20000, 1), sampler="ddpm", steps=6,
                generator=torch.Generator().manual_seed(0), callback=states.append)
    sigmas = sampling_sigmas(schedule, 6).double()
    variance = 1.0
    for i, info in enumerate(states[:-1]):
        ac_t, ac_s = 1 / (1 + sigmas[i] ** 2), 1 / (1 + sigmas[i + 1] ** 2)
        beta = 1 - ac_t / ac_s
        beta_tilde = beta * (1 - ac_s) / (1 - ac_t)
        coef = (1 - beta).sqrt() * (1 - ac_s) / (1 - ac_t)
        variance = coef ** 2 * variance + torch.exp(frac * beta.log() + (1 - frac) * beta_tilde.log())
        x_vp = info["x"].double() * ac_s.sqrt()
        assert x_vp.var().item() == pytest.approx(variance.item(), rel=0.04), i




def test_vlb_pieces_match_torch_distributions():
    """normal_kl is the Gaussian KL, the discretised log-likelihood is the log mass of a 2/255 bin (the edge bins
    open-ended), and vlb_loss is their per-sample mean in bits: KL to the true posterior for t > 0, NLL at t = 0."""
    from torch.distributions import Normal, kl_divergence

    from dalle2_pytorch.diffusion import discretized_gaussian_log_likelihood, normal_kl, vlb_loss

    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4))
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)

    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 1.0])
    means, log_scales = torch.tensor([-0.9, -0.4, 0.1, 0.2, 0.8]), torch.full((5,), -2.0)
    normal = Normal(means.double(), log_scales.double().exp())
    upper, lower = normal.cdf(x.double() + 1 / 255), normal.cdf(x.double() - 1 / 255)
    mass = torch.where(x < -0.999, upper, torch.where(x > 0.999, 1 - lower, upper - lower))
    got = discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales)
    torch.testing.assert_close(got.double(), mass.log(), atol=2e-2, rtol=1e-2)  # the cdf is tanh-approximated

    schedule = NoiseSchedule("cosine", 20)
    x0 = torch.rand(3, 2, 4, generator=g) * 2 - 1
    t = torch.tensor([0, 5, 19])
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    pred_x0 = x0 + 0.1 * torch.randn(x0.shape, generator=g)
    log_var = torch.randn(x0.shape, generator=g) * 0.1 + schedule.posterior_log_variance_clipped[t].view(-1, 1, 1)
    coef1 = schedule.posterior_mean_coef1[t].view(-1, 1, 1)
    coef2 = schedule.posterior_mean_coef2[t].view(-1, 1, 1)
    true_mean, model_mean = coef1 * x0 + coef2 * x_t, coef1 * pred_x0 + coef2 * x_t
    true_log_var = schedule.posterior_log_variance_clipped[t].view(-1, 1, 1).expand_as(x0)
    kl = kl_divergence(Normal(true_mean, (0.5 * true_log_var).exp()), Normal(model_mean, (0.5 * log_var).exp()))
    nll = -discretized_gaussian_log_likelihood(x0, means=model_mean, log_scales=0.5 * log_var)
    bits = torch.log(torch.tensor(2.0))
    expected = torch.stack([nll[0].mean(), kl[1].mean(), kl[2].mean()]) / bits
    torch.testing.assert_close(vlb_loss(schedule, x0, x_t, t, pred_x0, log_var), expected, atol=1e-5, rtol=1e-4)


def test_per_row_noise_levels_reach_the_network_row_by_row():
    schedule = NoiseSchedule("linear", 50)
    calls = []
    denoiser = ModelDenoiser(lambda x, t: calls.append((x, t)) or torch.zeros_like(x), schedule, "eps")
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([0, 7, 31])
    denoiser(x, schedule.sigmas[steps])
    x_vp, t = calls[-1]
    assert t.tolist() == steps.tolist()
    torch.testing.assert_close(x_vp, x / (1 + schedule.sigmas[steps, None] ** 2).sqrt())


def test_zero_terminal_snr_starts_at_the_infinite_level_only_for_x0_and_v():
    """An ε network cannot denoise pure noise (ᾱ = 0), so its sampling skips the σ = ∞ level; x0 and v networks
    start there, at the last training step."""
    schedule = NoiseSchedule("cosine", 20, zero_terminal_snr=True)
    assert torch.isinf(schedule.sigmas[-1])
    for objective in ("x0", "v", "eps"):
        seen = []

        def network(x_vp, t):
            seen.append(t[0].item())
            return torch.zeros_like(x_vp)

        denoiser = ModelDenoiser(network, schedule, objective)
        out = sample_loop(denoiser, (2, 3), sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all()
        assert (seen[0] == 19) == (objective != "eps"), (objective, seen)
        denoiser(torch.ones(2, 3), torch.tensor(float("inf")))
        assert seen[-1] == 19                  # σ = ∞ is the last step


@pytest.mark.parametrize("sampler, steps", [("ddim", 3), ("ddpm", 3), ("euler", 3), ("dpmpp_2m", 3), ("heun", 2)])
def test_self_conditioning_passes_the_previous_x0_estimate(sampler, steps):
    """While sampling, a self-conditioned network gets None at its first call and then the x0 estimate of the call
    before (after the x0 transform), in every sampler; Heun's corrector gets its predictor's estimate."""
    schedule = NoiseSchedule("cosine", 20)
    received = []

    def network(x_vp, t, self_cond=None):
        received.append(None if self_cond is None else self_cond.clone())
        return torch.full_like(x_vp, 0.5 * len(received))

    denoiser = ModelDenoiser(network, schedule, "x0", self_condition=True, x0_transform=lambda x0: x0.clamp(max=0.6))
    sample_loop(denoiser, (2, 3), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert len(received) == 3 and received[0] is None
    torch.testing.assert_close(received[1], torch.full((2, 3), 0.5))   # the first x0 (after its transform)
    torch.testing.assert_close(received[2], torch.full((2, 3), 0.6))   # 1.0 clamped to 0.6


def test_variance_frac_and_the_default_objective_on_hand_values():
    from dalle2_pytorch.diffusion import variance_frac

    raw = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(variance_frac(raw), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    torch.testing.assert_close(variance_frac(raw, constrain=True), torch.sigmoid(raw))
    schedule = NoiseSchedule("cosine", 20)
    eps = torch.full((2, 3), 0.3)
    denoiser = ModelDenoiser(lambda x, t: eps, schedule)      # ε is the default objective
    x0 = denoiser(torch.ones(2, 3), schedule.sigmas[10])
    a, s = schedule.sqrt_alphas_cumprod[10], schedule.sqrt_one_minus_alphas_cumprod[10]
    torch.testing.assert_close(x0, (torch.ones(2, 3) * a - s * eps) / a)

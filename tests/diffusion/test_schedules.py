"""Noise schedules match their closed forms; respacing keeps the kept steps' noise levels."""

import math

import pytest
import torch

from dalle2_pytorch.diffusion import BETA_SCHEDULES, NoiseSchedule, make_betas


def test_cosine_matches_closed_form():
    T, s = 1000, 0.008
    sched = NoiseSchedule("cosine", T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    for t in [0, 10, 500, 900]:  # before the 0.999 beta clip kicks in
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)


def test_linear_and_quadratic_endpoints_scale_with_timesteps():
    for T in (100, 1000):
        betas = make_betas("linear", T)
        assert betas[0].item() == pytest.approx(1e-4 * 1000 / T)
        assert betas[-1].item() == pytest.approx(0.02 * 1000 / T)
        q = make_betas("quadratic", T)
        assert q[0].item() == pytest.approx(1e-4 * 1000 / T) and q[-1].item() == pytest.approx(0.02 * 1000 / T)
        assert (q[1:-1] < betas[1:-1]).all()  # quadratic in sqrt space stays below linear


def test_sigmoid_is_monotone_between_endpoints():
    betas = make_betas("sigmoid", 1000)
    assert (betas[1:] > betas[:-1]).all()
    assert 1e-4 < betas[0].item() < 2e-4 and 0.0199 < betas[-1].item() < 0.02


def test_jsd_and_zero_terminal_snr_end_at_zero_signal():
    jsd = NoiseSchedule("jsd", 50)
    assert jsd.alphas_cumprod[-1].item() == 0.0 and torch.isinf(jsd.sigmas[-1])
    plain = NoiseSchedule("linear", 1000)
    zsnr = NoiseSchedule("linear", 1000, zero_terminal_snr=True)
    assert zsnr.alphas_cumprod[-1].item() == 0.0
    assert zsnr.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-6)


def test_buffers_are_float32_computed_in_float64_and_not_saved():
    sched = NoiseSchedule("cosine", 1000)
    assert sched.alphas_cumprod.dtype == torch.float32
    exact = torch.cumprod(1 - make_betas("cosine", 1000), 0)
    assert torch.equal(sched.alphas_cumprod, exact.float())
    assert sched.state_dict() == {}


def test_posterior_matches_bayes_rule():
    sched = NoiseSchedule("linear", 100)
    t = torch.tensor([5, 50, 99])
    x0, xt = torch.randn(3, 4), torch.randn(3, 4)
    mean, var, log_var = sched.q_posterior(x0, xt, t)
    a_t = 1 - sched.betas[t][:, None]
    ab_prev = sched.alphas_cumprod_prev[t][:, None]
    ab = sched.alphas_cumprod[t][:, None]
    # product of Gaussians: q(x_t | x_{t-1}) q(x_{t-1} | x0)
    prec = a_t / (1 - a_t) + 1 / (1 - ab_prev)
    expected_mean = (a_t.sqrt() * xt / (1 - a_t) + ab_prev.sqrt() * x0 / (1 - ab_prev)) / prec
    torch.testing.assert_close(mean, expected_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(var.expand_as(mean), (1 / prec).expand_as(mean), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(log_var, var.log())
    _ = ab


def test_respace_keeps_alphas_cumprod_at_kept_steps():
    sched = NoiseSchedule("cosine", 1000)
    small, kept = sched.respace(50)
    assert small.num_timesteps == 50 and kept[0] == 0 and kept[-1] == 999
    torch.testing.assert_close(small.alphas_cumprod, sched.alphas_cumprod[kept])


@pytest.mark.parametrize("bad", ["cosin", "", "karras"])
def test_unknown_schedule_names_the_choices(bad):
    with pytest.raises(ValueError, match="beta_schedule.*choose one of"):
        NoiseSchedule(bad, 10)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_non_positive_timesteps_rejected(bad):
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule("linear", bad)


def test_all_named_schedules_are_valid():
    for name in BETA_SCHEDULES:
        sched = NoiseSchedule(name, 64)
        ac = sched.alphas_cumprod
        assert (ac[1:] <= ac[:-1]).all() and 0 <= ac[-1] < ac[0] <= 1


@pytest.mark.parametrize("name", ["linear", "quadratic", "sigmoid"])
def test_too_few_timesteps_for_scaled_schedules_is_an_error(name):
    with pytest.raises(ValueError, match="timesteps=10 gives β > 1"):
        NoiseSchedule(name, 10)
    NoiseSchedule(name, 20)  # β_T = 20/20 = 1: zero terminal SNR, allowed

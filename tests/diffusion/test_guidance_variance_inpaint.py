"""CFG, thresholding, learned variance and RePaint inpainting."""

import pytest
import torch

from dalle2_pytorch.diffusion import (ModelDenoiser, NoiseSchedule, classifier_free_guidance, dynamic_threshold,
                                      learned_variance_log_var, repaint_sample_loop, sample_loop, static_clamp,
                                      vlb_loss)
from tests.diffusion.analytic import gaussian_denoiser, vp_model_from_ve


def test_cfg_scale_one_is_conditional_and_matches_paper_form():
    cond, null = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(classifier_free_guidance(cond, null, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(cond, null, 0.0), null)
    w = 2.0  # paper: (1 + w) cond - w null
    torch.testing.assert_close(classifier_free_guidance(cond, null, 1 + w), (1 + w) * cond - w * null)


def test_thresholding_keeps_values_in_range_by_imagens_formula():
    """s = max(1, quantile(|x0|, p)) per sample, then clip to [-s, s] and divide by s."""
    x = torch.tensor([[-3.0, -1.0, 0.5, 2.0],     # |x| sorted 0.5 1 2 3: the 0.5-quantile is 1.5
                      [0.2, -0.4, 0.6, -0.8],     # every |x| < 1: s = 1, unchanged
                      [4.0, -8.0, 2.0, 1.0]])     # |x| sorted 1 2 4 8: the 0.5-quantile is 3
    expected = torch.tensor([[-1.0, -1 / 1.5, 0.5 / 1.5, 1.0],
                             [0.2, -0.4, 0.6, -0.8],
                             [1.0, -1.0, 2 / 3, 1 / 3]])
    torch.testing.assert_close(dynamic_threshold(x, 0.5), expected)
    # p = 1: s is the largest magnitude, so each sample is only rescaled
    torch.testing.assert_close(dynamic_threshold(x, 1.0)[2], x[2] / 8)
    # the threshold is per sample, over every element of an image
    images = torch.stack([torch.full((2, 2, 2), 4.0), torch.full((2, 2, 2), -0.5)])
    torch.testing.assert_close(dynamic_threshold(images, 0.9), torch.stack([torch.ones(2, 2, 2),
                                                                            torch.full((2, 2, 2), -0.5)]))
    x = torch.randn(4, 3, 8, 8) * 5
    assert static_clamp(x).abs().max() <= 1
    assert dynamic_threshold(x, 0.9).abs().max() <= 1 + 1e-6
    small = torch.rand(2, 3, 4, 4) * 0.5  # already in range: untouched
    torch.testing.assert_close(dynamic_threshold(small, 0.95), small)
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(x, 1.5)


def test_learned_variance_interpolates_between_posterior_and_beta():
    sched = NoiseSchedule("cosine", 100)
    t = torch.tensor([3, 50])
    lo = learned_variance_log_var(sched, torch.zeros(2, 1), t)
    hi = learned_variance_log_var(sched, torch.ones(2, 1), t)
    torch.testing.assert_close(lo.squeeze(1), sched.posterior_log_variance_clipped[t])
    torch.testing.assert_close(hi.squeeze(1), sched.betas[t].log())


def test_vlb_is_finite_for_extreme_outputs_and_smallest_for_true_posterior():
    sched = NoiseSchedule("cosine", 100)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 50, 99])
    xt = sched.q_sample(x0, t, torch.randn_like(x0))
    for frac in (torch.zeros_like(x0), torch.ones_like(x0)):
        log_var = learned_variance_log_var(sched, frac, t)
        assert torch.isfinite(vlb_loss(sched, x0, xt, t, x0 * 50, log_var)).all()
    true = vlb_loss(sched, x0, xt, t, x0, learned_variance_log_var(sched, torch.zeros_like(x0), t))
    wrong = vlb_loss(sched, x0, xt, t, -x0, learned_variance_log_var(sched, torch.zeros_like(x0), t))
    assert (true[1:] < 1e-4).all() and (wrong[1:] > true[1:]).all()


def test_ddpm_uses_learned_variance_when_given():
    sched = NoiseSchedule("linear", 50)
    base = vp_model_from_ve(gaussian_denoiser(0.0, 1.0), sched)
    fixed = ModelDenoiser(base, sched, "x0")
    zero_frac = ModelDenoiser(lambda x, t: (base(x, t), torch.zeros_like(x)), sched, "x0")
    one_frac = ModelDenoiser(lambda x, t: (base(x, t), torch.ones_like(x)), sched, "x0")
    run = lambda d: sample_loop(d, (2000, 1), sampler="ddpm", steps=50, generator=torch.Generator().manual_seed(0))
    a, b, c = run(fixed), run(zero_frac), run(one_frac)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # frac 0 = posterior variance = default DDPM
    assert not torch.allclose(a, c)
    assert c.std().item() == pytest.approx(1.0, rel=0.1)  # both variance choices are valid samplers


def test_repaint_keeps_known_region_exactly_and_fills_the_rest():
    """Before every network call the known region holds the known image noised to that call's step, and the unknown
    region is sampled from the data distribution (here N(0, 1) per element)."""
    schedule = NoiseSchedule("cosine", 50)
    model = vp_model_from_ve(gaussian_denoiser(0.0, 1.0), schedule)
    calls = []

    def network(x_vp, t):
        calls.append((x_vp.clone(), t.clone()))
        return model(x_vp, t)

    known = torch.full((16, 3, 8, 8), 0.8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    out = repaint_sample_loop(ModelDenoiser(network, schedule, "x0"), (16, 3, 8, 8), known, mask,
                              resample_times=2, steps=50, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 50 * 2
    for x_vp, t in calls:
        a, s = schedule.sqrt_alphas_cumprod[t[0]], schedule.sqrt_one_minus_alphas_cumprod[t[0]]
        residual = (x_vp[..., :4] - a * known[..., :4]) / s
        assert abs(residual.mean().item()) < 0.1 and 0.9 < residual.std().item() < 1.1, t[0].item()
    assert torch.equal(out[..., :4], known[..., :4])
    filled = out[..., 4:]
    assert abs(filled.mean().item()) < 0.1 and filled.std().item() == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="resample_times"):
        repaint_sample_loop(ModelDenoiser(network, schedule, "x0"), (16, 3, 8, 8), known, mask, resample_times=0)


def test_repaint_starts_the_unknown_region_from_the_generators_unit_noise():
    """The first network input outside the mask is the generator's first N(0, I) draw at the VP scale."""
    schedule = NoiseSchedule("cosine", 20)
    model = vp_model_from_ve(gaussian_denoiser(0.0, 1.0), schedule)
    calls = []

    def network(x_vp, t):
        calls.append(x_vp.clone())
        return model(x_vp, t)

    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    repaint_sample_loop(ModelDenoiser(network, schedule, "x0"), (2, 3, 4, 4), torch.ones(2, 3, 4, 4), mask,
                        resample_times=1, steps=5, generator=torch.Generator().manual_seed(0))
    first_draw = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(calls[0][..., 2:], first_draw[..., 2:], atol=1e-6, rtol=1e-6)


def test_condition_keep_mask_drops_at_the_given_rate():
    from dalle2_pytorch.diffusion import condition_keep_mask

    assert condition_keep_mask(5, 0.0).all() and not condition_keep_mask(5, 1.0).any()
    torch.manual_seed(0)
    kept = condition_keep_mask(20000, 0.3).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.02)

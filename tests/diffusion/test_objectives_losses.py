"""ε / x0 / v conversions round-trip; losses and weights behave as documented."""

import pytest
import torch

from dalle2_pytorch.diffusion import (NoiseSchedule, diffusion_loss, eps_from_x0, model_output_to_x0,
                                      p2_loss_weights, training_target)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_training_target_maps_back_to_x0(objective):
    sched = NoiseSchedule("cosine", 1000)
    x0, noise = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    # ε -> x0 divides by sqrt(ᾱ_t): ill-conditioned in float32 at the very last steps
    t = torch.tensor([0, 1, 100, 500, 800, 900 if objective == "eps" else 998])
    xt = sched.q_sample(x0, t, noise)
    target = training_target(sched, objective, x0, noise, t)
    torch.testing.assert_close(model_output_to_x0(sched, objective, target, xt, t), x0, atol=1e-5, rtol=1e-5)


def test_eps_from_x0_recovers_the_noise_of_q_sample():
    sched = NoiseSchedule("cosine", 100)
    x0, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 10, 50, 90])
    torch.testing.assert_close(eps_from_x0(sched, sched.q_sample(x0, t, noise), t, x0), noise, atol=1e-5, rtol=1e-5)


def test_unknown_objective_and_loss_rejected():
    sched = NoiseSchedule("cosine", 10)
    with pytest.raises(ValueError, match="objective='x_0'"):
        training_target(sched, "x_0", torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="loss_type='mse'.*l1"):
        diffusion_loss(torch.zeros(2), torch.zeros(2), "mse")


def test_losses_and_weights():
    pred, target = torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.zeros(2, 2)
    assert diffusion_loss(pred, target, "l1").item() == pytest.approx(1.0)
    assert diffusion_loss(pred, target, "l2").item() == pytest.approx(2.5)
    assert diffusion_loss(pred, target, "huber").item() == pytest.approx((0.5 + 2.5) / 4)
    assert diffusion_loss(pred, target, "l2", weights=torch.tensor([0.0, 1.0])).item() == 0.0
    sched = NoiseSchedule("cosine", 1000)
    t = torch.tensor([1, 500, 990])
    assert torch.equal(p2_loss_weights(sched, t, gamma=0.0), torch.ones(3))
    w = p2_loss_weights(sched, t, gamma=1.0)
    assert (w[1:] > w[:-1]).all()  # noisier steps weigh more

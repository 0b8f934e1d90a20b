"""What the network predicts (ε, x0 or v) and the conversions between the three.

All functions take x_t in the usual variance-preserving scaling and integer steps ``t``.
"""

from __future__ import annotations

from torch import Tensor

from dalle2_pytorch.diffusion.schedules import NoiseSchedule, extract

OBJECTIVES = ("eps", "x0", "v")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not known; choose one of {list(OBJECTIVES)}")
    return objective


def objective_from_flags(predict_x_start: bool, predict_v: bool) -> str:
    """The reference's two booleans as an objective name (v wins when both are set)."""
    return "v" if predict_v else ("x0" if predict_x_start else "eps")


def _coefs(schedule: NoiseSchedule, t: Tensor, shape) -> tuple[Tensor, Tensor]:
    return extract(schedule.sqrt_alphas_cumprod, t, shape), extract(schedule.sqrt_one_minus_alphas_cumprod, t, shape)


def x0_from_eps(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    a, s = _coefs(schedule, t, x_t.shape)
    return (x_t - s * eps) / a


def eps_from_x0(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    a, s = _coefs(schedule, t, x_t.shape)
    return (x_t - a * x0) / s


def x0_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    a, s = _coefs(schedule, t, x_t.shape)
    return a * x_t - s * v


def v_target(schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0 (Salimans & Ho)."""
    a, s = _coefs(schedule, t, x0.shape)
    return a * noise - s * x0


def training_target(schedule: NoiseSchedule, objective: str, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """What a network trained with ``objective`` should output for x_t = q_sample(x0, t, noise)."""
    check_objective(objective)
    if objective == "eps":
        return noise
    if objective == "x0":
        return x0
    return v_target(schedule, x0, noise, t)


def model_output_to_x0(schedule: NoiseSchedule, objective: str, output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """The x0 prediction implied by a network output under ``objective``."""
    check_objective(objective)
    if objective == "x0":
        return output
    if objective == "eps":
        return x0_from_eps(schedule, x_t, t, output)
    return x0_from_v(schedule, x_t, t, output)

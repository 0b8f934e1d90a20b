"""The parts of a diffusion training step shared by the prior and the decoder."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from dalle2_pytorch.diffusion.objectives import model_output_to_x0
from dalle2_pytorch.diffusion.schedules import NoiseSchedule


def self_conditioning_estimate(first_pass: Callable[[], Tensor], schedule: NoiseSchedule, objective: str,
                               x_t: Tensor, t: Tensor, *, enabled: bool,
                               x0_transform: Optional[Callable[[Tensor], Tensor]] = None,
                               prob: float = 0.5) -> Optional[Tensor]:
    """Self-conditioning (Chen et al., Analog Bits) for one training batch.

    With probability ``prob`` (one coin for the batch) returns a detached x0 estimate from
    ``first_pass()`` (the network's raw output under ``objective`` at ``(x_t, t)``, without
    self-conditioning), passed through ``x0_transform`` (e.g. a clamp to the data range); otherwise
    None, and the network learns to denoise without one.  A network that does not self-condition
    (``enabled=False``) gets None and no random number is drawn.
    """
    if not enabled or not bool(torch.rand(()) < prob):
        return None
    with torch.no_grad():
        x0 = model_output_to_x0(schedule, objective, first_pass(), x_t, t)
        if x0_transform is not None:
            x0 = x0_transform(x0)
    return x0.detach()

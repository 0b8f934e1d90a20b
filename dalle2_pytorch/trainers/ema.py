"""Exponential moving averages of trained modules (through ``ema-pytorch``).

Each trained module (the prior's network, each unet of a decoder) gets one ``ema_pytorch.EMA``.
Its decay follows ema-pytorch's warm-up: after ``update_after_step`` updates (during which the
average is a plain copy), every ``update_every``-th update moves the average towards the online
weights with decay ``min(beta, 1 - (1 + n / inv_gamma) ** -power)`` where ``n`` counts the updates
past ``update_after_step``. ``TrainerBase.ema_weights()`` is the one way to use the averages in place of the
online weights (sampling, evaluation, the saved ``ema_model/``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ema_pytorch import EMA
from torch import nn

from dalle2_pytorch.trainers.optim import check_positive


@dataclass(frozen=True)
class EMASettings:
    """The ``ema_*`` keywords of the trainers."""

    beta: float = 0.9999
    update_after_step: int = 100
    update_every: int = 10
    power: float = 2 / 3
    inv_gamma: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0.0 <= self.beta < 1.0:
            raise ValueError(f"ema_beta={self.beta!r}: expected a number in [0, 1)")
        if isinstance(self.update_after_step, bool) or not isinstance(self.update_after_step, int) \
                or self.update_after_step < 0:
            raise ValueError(f"ema_update_after_step={self.update_after_step!r}: expected an int >= 0")
        check_positive("ema_update_every", self.update_every, integer=True)
        check_positive("ema_power", self.power)
        check_positive("ema_inv_gamma", self.inv_gamma)

    def make(self, module: nn.Module) -> EMA:
        """An EMA of ``module`` (a deep copy, kept on the module's device; the online model is not a submodule)."""
        return EMA(module, beta=self.beta, update_after_step=self.update_after_step, update_every=self.update_every,
                   power=self.power, inv_gamma=self.inv_gamma, include_online_model=False)

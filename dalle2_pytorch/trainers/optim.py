"""Optimiser set-up shared by the trainers: AdamW parameter groups and the learning-rate schedule.

Weight decay is applied only to matrices and convolution kernels (tensors with two or more
dimensions); biases, norm gains and other vectors are left undecayed, the usual AdamW practice.
The learning rate is a pure function of the number of optimiser steps taken (linear warm-up, then
optional cosine decay to zero), so a checkpoint only needs the step count to restore it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn


def per_part(name: str, value: Any, count: int, part_name: str = "unet") -> tuple:
    """A scalar repeated ``count`` times, or a tuple/list that must have exactly ``count`` entries."""
    if isinstance(value, (tuple, list)):
        if len(value) != count:
            raise ValueError(f"{name}={tuple(value)!r} has {len(value)} entries; expected one value "
                             f"or {count} (one per {part_name})")
        return tuple(value)
    return (value,) * count


def check_positive(name: str, value: Any, *, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        expected = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name}={value!r}: expected {expected}" + (" or None" if allow_none else ""))


def weight_decay_param_groups(module: nn.Module, wd: float, group_wd_params: bool = True) -> list[dict]:
    """Trainable parameters of ``module`` split into a decayed group (ndim >= 2) and an undecayed one."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not group_wd_params:
        return [{"params": params, "weight_decay": wd}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_adamw(module: nn.Module, *, lr: float, wd: float, eps: float, betas: Sequence[float],
                group_wd_params: bool = True) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``module`` (no decay on biases and norms)."""
    check_positive("lr", lr)
    check_positive("eps", eps)
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
        raise ValueError(f"wd={wd!r}: expected a number >= 0")
    if len(tuple(betas)) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas={betas!r}: expected two numbers in [0, 1)")
    groups = weight_decay_param_groups(module, float(wd), group_wd_params)
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters (all have requires_grad=False)")
    return torch.optim.AdamW(groups, lr=float(lr), eps=float(eps), betas=tuple(betas))


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the base learning rate as a function of the optimiser steps already taken.

    ``warmup_steps``: the factor rises linearly ``1/warmup, 2/warmup, ... 1``.
    ``cosine_decay_max_steps``: the factor follows ``(1 + cos(pi * step / max_steps)) / 2`` and stays
    at 0 after ``max_steps`` (PyTorch's ``CosineAnnealingLR`` with ``eta_min=0``, not restarted).
    """

    warmup_steps: int | None = None
    cosine_decay_max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive("warmup_steps", self.warmup_steps, allow_none=True, integer=True)
        check_positive("cosine_decay_max_steps", self.cosine_decay_max_steps, allow_none=True, integer=True)

    def factor(self, step: int) -> float:
        factor = 1.0
        if self.warmup_steps is not None:
            factor *= min(1.0, (step + 1) / self.warmup_steps)
        if self.cosine_decay_max_steps is not None:
            progress = min(step, self.cosine_decay_max_steps) / self.cosine_decay_max_steps
            factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor


def apply_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, schedule: LRSchedule, step: int) -> float:
    """Set every group's learning rate for optimiser step number ``step`` (0-based); returns it."""
    lr = base_lr * schedule.factor(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def has_trainable_parameters(modules: Iterable[nn.Module]) -> bool:
    return any(p.requires_grad for m in modules for p in m.parameters())

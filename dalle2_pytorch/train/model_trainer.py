"""The trainers' machinery (AdamW groups, schedule, EMA, NaN-skip, checkpoints) for models without a trainer of their
own: a CLIP or a VQGAN-VAE.  Part ``model`` trains every parameter outside the ``separate`` submodules; each of those
(a VAE's ``discr``) is a part of its own with its own AdamW."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.ema import EMASettings
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw, weight_decay_param_groups


class ModelTrainer(TrainerBase):
    """``trainer(loss_fn, part)`` runs ``loss_fn()`` forward and backward; ``trainer.update(part)`` steps that part."""

    def __init__(self, model: nn.Module, *, accelerator: Accelerator | None = None, mixed_precision: str | None = None,
                 lr: float, wd: float = 0.0, max_grad_norm: float | None = None, warmup_steps: int | None = None,
                 cosine_decay_max_steps: int | None = None, ema_beta: float | None = None,
                 separate: Sequence[str] = ()) -> None:
        super().__init__(model, accelerator=accelerator, mixed_precision=mixed_precision, max_consecutive_bad_steps=10)
        schedule = LRSchedule(warmup_steps, cosine_decay_max_steps)
        apart = {id(p) for name in separate for p in self.model.get_submodule(name).parameters()}
        groups = [dict(g, params=[p for p in g["params"] if id(p) not in apart])
                  for g in weight_decay_param_groups(self.model, float(wd))]
        ema = None if ema_beta is None else EMASettings(ema_beta, update_after_step=0, update_every=1).make(self.model)
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        self._add_part(name="model", module_path="", optimizer=optimizer, lr=lr, schedule=schedule,
                       max_grad_norm=max_grad_norm, ema=ema)
        for name in separate:
            optimizer = build_adamw(self.model.get_submodule(name), lr=lr, wd=wd, eps=1e-8, betas=(0.9, 0.999))
            self._add_part(name=name, module_path=name, optimizer=optimizer, lr=lr, schedule=schedule,
                           max_grad_norm=None, ema=None)

    def __call__(self, loss_fn: Callable[[], torch.Tensor], part: str = "model") -> float:
        return self._forward_backward(self.parts[part], loss_fn, (), {}, None)

    def update(self, part: str = "model") -> None:
        self._update(self.parts[part])

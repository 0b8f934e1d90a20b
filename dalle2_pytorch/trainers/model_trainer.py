"""ModelTrainer: the trainers' core (AdamW groups, schedule, EMA, NaN-skip, checkpoints) for models without a trainer of
their own, a CLIP or a VQGAN-VAE.

Part ``model`` trains every parameter outside the ``separate`` submodules; each of those (a VAE's ``discr``) is a part
of its own with its own AdamW (learning rate ``separate_lr``, default ``lr``), stepped by ``update(name)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.ema import EMASettings
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw, check_positive, weight_decay_param_groups


class ModelTrainer(TrainerBase):
    """``trainer(loss_fn, part)`` runs ``loss_fn()`` forward and backward; ``trainer.update(part)`` steps that part.

    Args:
        model: the module to train (a ``PretrainedMixin`` model for checkpoint folders).
        lr, wd: AdamW learning rate and weight decay (no decay on biases and norms); ``separate_lr``: the separate
            parts' learning rate (default ``lr``).
        max_grad_norm: clip every part's gradient norm to this value (None: no clipping).
        warmup_steps, cosine_decay_max_steps: learning-rate warm-up and cosine decay of every part (None: off).
        ema_beta: keep an EMA of the whole model with this decay (None: no EMA); ``ema_update_after_step`` and
            ``ema_update_every`` as in :class:`~dalle2_pytorch.trainers.ema.EMASettings`.
        separate: names of submodules trained as parts of their own (e.g. ``("discr",)``).
        device: train there instead of on the accelerator's device (single process only).
    """

    def __init__(self, model: nn.Module, *, accelerator: Accelerator | None = None, mixed_precision: str | None = None,
                 lr: float, wd: float = 0.0, max_grad_norm: float | None = None, warmup_steps: int | None = None,
                 cosine_decay_max_steps: int | None = None, ema_beta: float | None = None,
                 ema_update_after_step: int = 0, ema_update_every: int = 1, separate: Sequence[str] = (),
                 separate_lr: float | None = None, device: str | torch.device | None = None) -> None:
        check_positive("lr", lr)
        check_positive("separate_lr", separate_lr, allow_none=True)
        if isinstance(separate, str):
            raise TypeError(f"separate must be a sequence of submodule names, e.g. ({separate!r},)")
        super().__init__(model, accelerator=accelerator, mixed_precision=mixed_precision, max_consecutive_bad_steps=10,
                         device=device)
        schedule = LRSchedule(warmup_steps, cosine_decay_max_steps)
        apart = {id(p) for name in separate for p in self.model.get_submodule(name).parameters()}
        groups = [dict(g, params=[p for p in g["params"] if id(p) not in apart])
                  for g in weight_decay_param_groups(self.model, float(wd))]
        ema = None
        if ema_beta is not None:
            ema = EMASettings(ema_beta, update_after_step=ema_update_after_step,
                              update_every=ema_update_every).make(self.model)
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        self._add_part(name="model", module_path="", optimizer=optimizer, lr=lr, schedule=schedule,
                       max_grad_norm=max_grad_norm, ema=ema)
        other_lr = lr if separate_lr is None else separate_lr
        for name in separate:
            optimizer = build_adamw(self.model.get_submodule(name), lr=other_lr, wd=wd, eps=1e-8, betas=(0.9, 0.999))
            self._add_part(name=name, module_path=name, optimizer=optimizer, lr=other_lr, schedule=schedule,
                           max_grad_norm=max_grad_norm, ema=None)

    def __call__(self, loss_fn: Callable[[], torch.Tensor], part: str = "model") -> float:
        """Forward and backward of ``loss_fn()`` into ``part``'s gradients; returns the loss as a float.

        Several calls before :meth:`update` accumulate gradients (scale each loss by 1/n for a mean)."""
        return self._forward_backward(self._part(part), loss_fn, (), {}, None)

    def update(self, part: str = "model") -> None:
        """Clip, step and EMA-update ``part`` (or skip a non-finite step)."""
        self._update(self._part(part))

    def _part(self, name: str):
        if name not in self.parts:
            raise KeyError(f"no trained part {name!r}; this trainer trains {sorted(self.parts)}")
        return self.parts[name]

"""DiffusionPriorTrainer: AdamW, EMA, gradient accumulation, mixed precision and checkpoints for a prior.

    trainer = DiffusionPriorTrainer(diffusion_prior, lr=3e-4, wd=1e-2, ema_beta=0.99)
    loss = trainer(text, images, max_batch_size=4)   # forward + backward, in chunks of 4
    trainer.update()                                  # clip, step, EMA
    image_embeds = trainer.sample(text, max_batch_size=4)   # with the EMA network
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator

from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.trainers.accumulation import sample_in_chunks
from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.ema import EMASettings
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw
from dalle2_pytorch.validation import strict_keywords


class DiffusionPriorTrainer(TrainerBase):
    """Trains a :class:`DiffusionPrior` (its network; the CLIP stays frozen).

    Args:
        diffusion_prior: the prior to train (moved to ``accelerator.device``).
        accelerator: an ``accelerate.Accelerator``; one is made when omitted (``accelerate launch``
            settings apply).
        mixed_precision: ``'no'``, ``'fp16'`` (with a gradient scaler) or ``'bf16'``; default: the accelerator's.
        use_ema: keep an exponential moving average of the network; ``sample`` uses it.
        lr, wd, eps, betas: AdamW settings (no weight decay on biases and norms when ``group_wd_params``).
        max_grad_norm: clip the gradient norm to this value (None: no clipping).
        warmup_steps: linear learning-rate warm-up.  cosine_decay_max_steps: cosine decay to 0.
        ema_beta, ema_update_after_step, ema_update_every, ema_power, ema_inv_gamma: EMA settings
            (see :mod:`dalle2_pytorch.trainers.ema`).
        max_consecutive_bad_steps: after this many steps in a row with a non-finite loss or gradient,
            raise ``FloatingPointError`` (single bad steps are skipped with a warning).
    """

    sharding_verified = True  # FSDP: tests/trainers/test_fsdp.py; ZeRO: tests/trainers/test_zero.py

    @strict_keywords()
    def __init__(self, diffusion_prior: DiffusionPrior, *, accelerator: Accelerator | None = None,
                 mixed_precision: str | None = None, use_ema: bool = True, lr: float = 3e-4, wd: float = 1e-2,
                 eps: float = 1e-6, betas: Sequence[float] = (0.9, 0.99), max_grad_norm: float | None = None,
                 group_wd_params: bool = True, warmup_steps: int | None = None,
                 cosine_decay_max_steps: int | None = None, ema_beta: float = 0.9999,
                 ema_update_after_step: int = 100, ema_update_every: int = 10, ema_power: float = 2 / 3,
                 ema_inv_gamma: float = 1.0, max_consecutive_bad_steps: int = 10) -> None:
        if not isinstance(diffusion_prior, DiffusionPrior):
            raise TypeError(f"diffusion_prior must be a DiffusionPrior, got {type(diffusion_prior).__name__}")
        ema_settings = EMASettings(beta=ema_beta, update_after_step=ema_update_after_step,
                                   update_every=ema_update_every, power=ema_power, inv_gamma=ema_inv_gamma)
        schedule = LRSchedule(warmup_steps, cosine_decay_max_steps)
        super().__init__(diffusion_prior, accelerator=accelerator, mixed_precision=mixed_precision,
                         max_consecutive_bad_steps=max_consecutive_bad_steps)
        self.use_ema = bool(use_ema)
        net = self.model.net
        optimizer = build_adamw(net, lr=lr, wd=wd, eps=eps, betas=betas, group_wd_params=group_wd_params)
        self._add_part(name="prior", module_path="net", optimizer=optimizer, lr=lr, schedule=schedule,
                       max_grad_norm=max_grad_norm, ema=ema_settings.make(net) if self.use_ema else None)

    @property
    def diffusion_prior(self) -> DiffusionPrior:
        return self.model

    @property
    def step(self) -> int:
        """Optimiser steps taken."""
        return self.parts["prior"].step

    @property
    def skipped_steps(self) -> int:
        return self.parts["prior"].skipped_steps

    @property
    def ema_diffusion_prior_net(self) -> torch.nn.Module | None:
        ema = self.parts["prior"].ema
        return None if ema is None else ema.ema_model

    def __call__(self, *args: Any, max_batch_size: int | None = None, **kwargs: Any) -> float:
        """Forward and backward on a batch (``text``/``image`` or their embeddings, as for the prior).

        The batch is processed in chunks of at most ``max_batch_size`` rows whose gradients add up to
        the whole batch's.  Returns the batch's mean loss as a float.
        """
        return self._forward_backward(self.parts["prior"], self.model, args, kwargs, max_batch_size)

    forward = __call__

    def update(self) -> None:
        """Clip gradients, step the optimiser and the EMA (or skip a non-finite step)."""
        self._update(self.parts["prior"])

    @torch.no_grad()
    def sample(self, *args: Any, max_batch_size: int | None = None, use_non_ema: bool = False,
               **kwargs: Any) -> torch.Tensor:
        """``DiffusionPrior.sample`` with the EMA network (unless ``use_non_ema``), in chunks of ``max_batch_size``."""
        args = tuple(self._to_device(a) for a in args)
        kwargs = {k: self._to_device(v) for k, v in kwargs.items()}
        with nullcontext() if use_non_ema else self.ema_weights():
            return sample_in_chunks(self.model.sample, args, kwargs, max_batch_size)

    def _load_legacy(self, path: Path, strict: bool) -> None:
        """A reference (DALLE2-pytorch 1.15.6) prior checkpoint: the network's weights, converted."""
        from dalle2_pytorch.compat.prior import convert_reference_prior_state
        from dalle2_pytorch.serialization import load_legacy_state_dict

        state = convert_reference_prior_state(load_legacy_state_dict(path))
        self.model.net.load_state_dict({k[len("net."):]: v for k, v in state.items()}, strict=strict)

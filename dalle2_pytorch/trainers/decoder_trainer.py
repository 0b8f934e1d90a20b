"""DecoderTrainer: one optimiser, schedule and EMA per unet of a cascading decoder.

    trainer = DecoderTrainer(decoder, lr=3e-4, wd=1e-2, ema_beta=0.99)
    for unet_number in (1, 2):
        loss = trainer(images, text=text, unet_number=unet_number, max_batch_size=4)
        trainer.update(unet_number)
    images = trainer.sample(image_embed=image_embed, text=text)   # with the EMA unets
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator

from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.trainers.accumulation import sample_in_chunks
from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.ema import EMASettings
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw, per_part
from dalle2_pytorch.validation import strict_keywords


class DecoderTrainer(TrainerBase):
    """Trains the unets of a :class:`Decoder`, each on its own (the CLIP and VAEs stay frozen).

    Keywords marked *per unet* take one value or a tuple with one value per unet.

    Args:
        decoder: the decoder to train (moved to ``accelerator.device``).
        accelerator: an ``accelerate.Accelerator``; one is made when omitted.
        mixed_precision: ``'no'``, ``'fp16'`` (with a gradient scaler per unet) or ``'bf16'``; default: the
            accelerator's.
        use_ema: keep an exponential moving average of every trained unet; ``sample`` uses them.
        lr, wd, eps: *per unet* AdamW settings (no weight decay on biases and norms when ``group_wd_params``).
        betas: AdamW betas.
        max_grad_norm: clip each unet's gradient norm to this value (None: no clipping).
        warmup_steps, cosine_decay_max_steps: *per unet* learning-rate warm-up and cosine decay (None: off).
        ema_beta, ema_update_after_step, ema_update_every, ema_power, ema_inv_gamma: EMA settings.
        only_train_unets: numbers of the unets to train (default: every unet with trainable parameters);
            the others get no optimiser or EMA and stay as they are.
        max_consecutive_bad_steps: after this many steps in a row with a non-finite loss or gradient,
            raise ``FloatingPointError`` (single bad steps are skipped with a warning).
    """

    sharding_verified = True  # FSDP: tests/trainers/test_fsdp.py; ZeRO: tests/trainers/test_zero.py

    @strict_keywords()
    def __init__(self, decoder: Decoder, *, accelerator: Accelerator | None = None,
                 mixed_precision: str | None = None, use_ema: bool = True, lr: Any = 1e-4, wd: Any = 1e-2,
                 eps: Any = 1e-8, betas: Sequence[float] = (0.9, 0.99), max_grad_norm: float | None = 0.5,
                 group_wd_params: bool = True, warmup_steps: Any = None, cosine_decay_max_steps: Any = None,
                 ema_beta: float = 0.9999, ema_update_after_step: int = 100, ema_update_every: int = 10,
                 ema_power: float = 2 / 3, ema_inv_gamma: float = 1.0,
                 only_train_unets: Sequence[int] | None = None, max_consecutive_bad_steps: int = 10) -> None:
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a Decoder, got {type(decoder).__name__}")
        n = decoder.num_unets
        lrs, wds, epss = per_part("lr", lr, n), per_part("wd", wd, n), per_part("eps", eps, n)
        warmups = per_part("warmup_steps", warmup_steps, n)
        decays = per_part("cosine_decay_max_steps", cosine_decay_max_steps, n)
        schedules = [LRSchedule(w, d) for w, d in zip(warmups, decays)]
        ema_settings = EMASettings(beta=ema_beta, update_after_step=ema_update_after_step,
                                   update_every=ema_update_every, power=ema_power, inv_gamma=ema_inv_gamma)
        trainable = [i for i in range(1, n + 1) if any(p.requires_grad for p in decoder.get_unet(i).parameters())]
        if only_train_unets is None:
            chosen = trainable
        else:
            chosen = sorted(set(decoder.check_unet_number(i, "only_train_unets") for i in only_train_unets))
            frozen = [i for i in chosen if i not in trainable]
            if frozen:
                raise ValueError(f"only_train_unets={tuple(only_train_unets)!r}: unet(s) {frozen} have no trainable "
                                 "parameters (requires_grad=False)")
        if not chosen:
            raise ValueError("the decoder has no unet with trainable parameters")
        super().__init__(decoder, accelerator=accelerator, mixed_precision=mixed_precision,
                         max_consecutive_bad_steps=max_consecutive_bad_steps)
        self.use_ema = bool(use_ema)
        for number in chosen:
            i = number - 1
            unet = self.model.get_unet(number)
            optimizer = build_adamw(unet, lr=lrs[i], wd=wds[i], eps=epss[i], betas=betas,
                                    group_wd_params=group_wd_params)
            self._add_part(name=f"unet{number}", module_path=f"unets.{i}", optimizer=optimizer, lr=lrs[i],
                           schedule=schedules[i], max_grad_norm=max_grad_norm,
                           ema=ema_settings.make(unet) if self.use_ema else None)

    @property
    def decoder(self) -> Decoder:
        return self.model

    @property
    def trained_unet_numbers(self) -> tuple[int, ...]:
        return tuple(int(name[len("unet"):]) for name in self.parts)

    def _part(self, unet_number: int | None):
        if unet_number is None:
            if len(self.parts) != 1:
                raise ValueError(f"unet_number is required: this trainer trains unets {self.trained_unet_numbers}")
            return next(iter(self.parts.values()))
        self.model.check_unet_number(unet_number)
        part = self.parts.get(f"unet{unet_number}")
        if part is None:
            raise ValueError(f"unet_number={unet_number!r}: this trainer only trains unets {self.trained_unet_numbers}")
        return part

    def num_steps_taken(self, unet_number: int | None = None) -> int:
        """Optimiser steps taken by a unet."""
        return self._part(unet_number).step

    def skipped_steps(self, unet_number: int | None = None) -> int:
        """Steps of a unet skipped because the loss or the gradients were not finite."""
        return self._part(unet_number).skipped_steps

    def ema_unet(self, unet_number: int | None = None) -> torch.nn.Module | None:
        ema = self._part(unet_number).ema
        return None if ema is None else ema.ema_model

    def __call__(self, *args: Any, unet_number: int | None = None, max_batch_size: int | None = None,
                 **kwargs: Any) -> float:
        """Forward and backward of one unet on a batch (arguments as for ``Decoder.forward``).

        The batch is processed in chunks of at most ``max_batch_size`` rows whose gradients add up to
        the whole batch's.  Returns the batch's mean loss as a float.
        """
        part = self._part(unet_number)
        number = int(part.name[len("unet"):])
        return self._forward_backward(part, self.model, args, dict(kwargs, unet_number=number), max_batch_size)

    forward = __call__

    def update(self, unet_number: int | None = None) -> None:
        """Clip the unet's gradients, step its optimiser and EMA (or skip a non-finite step)."""
        self._update(self._part(unet_number))

    @torch.no_grad()
    def sample(self, *args: Any, max_batch_size: int | None = None, use_non_ema: bool = False,
               batch_size: int | None = None, **kwargs: Any) -> torch.Tensor:
        """``Decoder.sample`` with the EMA unets (unless ``use_non_ema``), in chunks of ``max_batch_size``.

        For an unconditional decoder pass ``batch_size``; it is split into chunks too.
        """
        args = tuple(self._to_device(a) for a in args)
        kwargs = {k: self._to_device(v) for k, v in kwargs.items()}
        with nullcontext() if use_non_ema else self.ema_weights():
            return sample_in_chunks(self.model.sample, args, kwargs, max_batch_size, batch_size=batch_size)

    def _load_legacy(self, path: Path, strict: bool) -> None:
        """A reference (DALLE2-pytorch 1.15.6) decoder checkpoint: every unet's weights, converted."""
        from dalle2_pytorch.compat.unet import load_reference_unet_state
        from dalle2_pytorch.serialization import load_legacy_state_dict

        state = load_legacy_state_dict(path)
        for index, unet in enumerate(self.model.unets):
            load_reference_unet_state(unet, state, index)

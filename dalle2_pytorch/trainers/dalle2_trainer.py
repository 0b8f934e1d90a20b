"""DALLE2Trainer: the prior and every unet of the decoder trained together from (text, image) pairs.

    trainer = DALLE2Trainer(dalle2, prior_loss_weight=0.1, decoder_loss_weight=1., learning_rate=1e-4)
    trainer.train(train_loader, num_train_steps=100000, batch_size=4, grad_accum_every=4)
    trainer.save("dalle2.ckpt")                      # exact resume: trainer.load("dalle2.ckpt")
    images = trainer.sample(["a red square"])        # with the EMA weights

It is the trainers' core (:class:`~dalle2_pytorch.trainers.base.TrainerBase`) with one *part* per independently
optimised module: ``prior`` (the prior's network) and ``unet1``, ``unet2``, ... (the decoder's unets), each with its
own AdamW, EMA and (fp16) grad scaler; the CLIP (and any text encoder) stays frozen.  A batch's loss is
``prior_loss_weight * prior loss + decoder_loss_weight * decoder loss``, where the decoder loss is the mean loss
of the unets trained on that batch.  The parts share no parameters, so each part's gradient is its weighted term's.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from dalle2_pytorch.dalle2 import DALLE2, TextInput
from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.ema import EMASettings
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw, check_positive
from dalle2_pytorch.validation import check_choice, strict_keywords

UNET_SCHEDULES = ("together", "in_turn")


class DALLE2Trainer(TrainerBase):
    """Trains a whole :class:`~dalle2_pytorch.dalle2.DALLE2` (prior and decoder) on (text, image) batches.

    Args:
        dalle2: the pipeline to train (moved to ``accelerator.device``).
        prior_loss_weight, decoder_loss_weight: weights of the two losses in the reported total.  Each part has its
            own AdamW, which is invariant to a constant loss scale, so the weights change training through the
            gradient clipping (``max_grad_norm``) and AdamW's ``eps``; 0 turns a part's training off.
        learning_rate: AdamW learning rate of every part.  wd: weight decay (not on biases and norms).
        max_grad_norm: clip each part's gradient norm (None: no clipping).
        unets: ``'together'`` (default): every step trains every unet of the cascade on the batch (each upsampler
            learns from the batch's images resized to its own size); ``'in_turn'``: step s trains only unet
            ``s % num_unets + 1`` (less memory and time per step, each unet gets 1/num_unets of the steps).
        use_ema, ema_beta, ema_update_after_step, ema_update_every: an EMA of every part; ``sample`` uses it.
        warmup_steps, cosine_decay_max_steps: learning-rate warm-up and cosine decay (None: off).
        accelerator, mixed_precision, max_consecutive_bad_steps: as for the other trainers.
    """

    @strict_keywords()
    def __init__(self, dalle2: DALLE2, *, prior_loss_weight: float = 1.0, decoder_loss_weight: float = 1.0,
                 learning_rate: float = 1e-4, wd: float = 1e-2, max_grad_norm: float | None = 0.5,
                 unets: str = "together", use_ema: bool = True, ema_beta: float = 0.9999,
                 ema_update_after_step: int = 100, ema_update_every: int = 10, warmup_steps: int | None = None,
                 cosine_decay_max_steps: int | None = None, accelerator: Accelerator | None = None,
                 mixed_precision: str | None = None, max_consecutive_bad_steps: int = 10) -> None:
        if not isinstance(dalle2, DALLE2):
            raise TypeError(f"dalle2 must be a DALLE2 pipeline, got {type(dalle2).__name__}")
        for name, weight in (("prior_loss_weight", prior_loss_weight), ("decoder_loss_weight", decoder_loss_weight)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ValueError(f"{name}={weight!r}: expected a number >= 0")
        if prior_loss_weight == 0 and decoder_loss_weight == 0:
            raise ValueError("prior_loss_weight and decoder_loss_weight are both 0: nothing would be trained")
        check_positive("learning_rate", learning_rate)
        check_choice("unets", unets, UNET_SCHEDULES)
        ema_settings = EMASettings(beta=ema_beta, update_after_step=ema_update_after_step,
                                   update_every=ema_update_every)
        schedule = LRSchedule(warmup_steps, cosine_decay_max_steps)
        super().__init__(dalle2, accelerator=accelerator, mixed_precision=mixed_precision,
                         max_consecutive_bad_steps=max_consecutive_bad_steps)
        self.prior_loss_weight, self.decoder_loss_weight = float(prior_loss_weight), float(decoder_loss_weight)
        self.unet_schedule = unets
        self.use_ema = bool(use_ema)
        paths = ([("prior", "prior.net")] if prior_loss_weight > 0 else []) + (
            [(f"unet{i + 1}", f"decoder.unets.{i}") for i in range(dalle2.decoder.num_unets)]
            if decoder_loss_weight > 0 else [])
        for name, path in paths:
            module = self.model.get_submodule(path)
            optimizer = build_adamw(module, lr=learning_rate, wd=wd, eps=1e-8, betas=(0.9, 0.99),
                                    group_wd_params=True)
            self._add_part(name=name, module_path=path, optimizer=optimizer, lr=learning_rate, schedule=schedule,
                           max_grad_norm=max_grad_norm, ema=ema_settings.make(module) if self.use_ema else None)
        self.step = 0  # optimiser steps of the whole pipeline (every part trained on a batch steps once)

    @property
    def dalle2(self) -> DALLE2:
        return self.model

    # ------------------------------------------------------------------ one batch
    def _unets_of_step(self, step: int) -> list[int]:
        numbers = [int(name[len("unet"):]) for name in self.parts if name.startswith("unet")]
        if self.unet_schedule == "in_turn" and numbers:
            return [numbers[step % len(numbers)]]
        return numbers

    def __call__(self, text: TextInput, images: torch.Tensor, *, max_batch_size: int | None = None,
                 loss_scale: float = 1.0) -> dict[str, float]:
        """Forward and backward of every part trained at this step on a batch of ``text`` (strings or token ids)
        and ``images`` ((b, c, h, w) in the decoder's input range, [0, 1] by default).

        Returns the losses as floats: ``'prior'``, ``'unet1'``, ... (unweighted), ``'decoder'`` (their mean) and
        ``'loss'`` (the weighted total).  ``loss_scale`` multiplies the gradients (1/n to average n accumulated
        batches); rows are processed in chunks of at most ``max_batch_size``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a (batch, channels, height, width) tensor, got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        dalle2 = self.model
        prior_tokens = dalle2._tokens(text if not isinstance(text, str) else [text], dalle2.prior.clip)
        if prior_tokens.shape[0] != images.shape[0]:
            raise ValueError(f"{prior_tokens.shape[0]} texts but {images.shape[0]} images; give one text per image")
        decoder_tokens = dalle2._tokens(text if not isinstance(text, str) else [text], dalle2.decoder.clip) \
            if dalle2.decoder.condition_on_text_encodings else None
        losses: dict[str, float] = {}
        if "prior" in self.parts:
            weight = self.prior_loss_weight * loss_scale
            losses["prior"] = self._forward_backward(
                self.parts["prior"], lambda text, image: dalle2.prior(text=text, image=image) * weight,
                (), {"text": prior_tokens, "image": images}, max_batch_size) / weight
        numbers = self._unets_of_step(self.step)
        for number in numbers:
            weight = self.decoder_loss_weight * loss_scale / len(numbers)
            kwargs = {"image": images, "unet_number": number}
            if decoder_tokens is not None:
                kwargs["text"] = decoder_tokens
            losses[f"unet{number}"] = self._forward_backward(
                self.parts[f"unet{number}"], lambda **kw: dalle2.decoder(**kw) * weight, (), kwargs,
                max_batch_size) / weight
        if numbers:
            losses["decoder"] = sum(losses[f"unet{n}"] for n in numbers) / len(numbers)
        losses["loss"] = self.prior_loss_weight * losses.get("prior", 0.0) + \
            self.decoder_loss_weight * losses.get("decoder", 0.0)
        return losses

    forward = __call__

    def update(self) -> None:
        """Clip, step and EMA-update every part that received gradients since the last update."""
        pending = [part for part in self.parts.values() if part.pending_backward]
        if not pending:
            raise RuntimeError("update() was called without a forward pass since the last update: call the trainer "
                               "on a batch first")
        for part in pending:
            self._update(part)
        self.step += 1

    # ------------------------------------------------------------------ the loop
    def train(self, loader: Iterable, num_train_steps: int, batch_size: int | None = None,
              grad_accum_every: int = 1, *, max_batch_size: int | None = None, progress: bool = True,
              checkpoint_path: str | None = None, checkpoint_every: int | None = None) -> list[dict[str, float]]:
        """Train until ``num_train_steps`` optimiser steps were taken (a resumed trainer continues its count).

        ``loader`` yields ``(text, images)`` batches (texts as strings or token ids); it is iterated again when it
        ends.  Its rows are regrouped into batches of exactly ``batch_size`` (default: the loader's own batches),
        and each step accumulates the gradients of ``grad_accum_every`` such batches (their mean), so a step sees
        ``batch_size * grad_accum_every`` pairs.  A resumed trainer skips the pairs its steps already used, so a
        loader that yields the same pairs on every pass resumes exactly.  ``checkpoint_path`` is written every
        ``checkpoint_every`` steps and at the end.  Returns the losses of each step taken here (means over the
        accumulated batches)."""
        check_positive("num_train_steps", num_train_steps, integer=True)
        check_positive("batch_size", batch_size, allow_none=True, integer=True)
        check_positive("grad_accum_every", grad_accum_every, integer=True)
        check_positive("checkpoint_every", checkpoint_every, allow_none=True, integer=True)
        if checkpoint_every is not None and checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        batches = _regrouped(loader, batch_size)
        if self.step and batch_size is None:
            raise ValueError("resuming train() needs batch_size, to know how many pairs the earlier steps used")
        skip = self.step * grad_accum_every
        batches = itertools.islice(batches, skip, None)
        history: list[dict[str, float]] = []
        bar = tqdm(total=num_train_steps, initial=min(self.step, num_train_steps), desc="DALLE2",
                   disable=not (progress and self.is_main_process))
        while self.step < num_train_steps:
            totals: dict[str, float] = {}
            for _ in range(grad_accum_every):
                text, images = next(batches)
                for key, value in self(text, images, max_batch_size=max_batch_size,
                                       loss_scale=1.0 / grad_accum_every).items():
                    totals[key] = totals.get(key, 0.0) + value / grad_accum_every
            self.update()
            history.append(totals)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in totals.items() if k != "decoder"})
            if checkpoint_path is not None and (self.step % (checkpoint_every or num_train_steps) == 0
                                                or self.step == num_train_steps):
                self.save(checkpoint_path)
        bar.close()
        return history

    # ------------------------------------------------------------------ sampling and checkpoints
    @torch.no_grad()
    def sample(self, text: TextInput, *, use_non_ema: bool = False, **options: Any) -> Any:
        """The pipeline's images for ``text`` (``options`` as for ``DALLE2.__call__``), with the EMA weights
        unless ``use_non_ema``."""
        if use_non_ema or not self.has_ema:
            return self.model(text, **options)
        with self.ema_weights():
            return self.model(text, **options)

    def training_state(self, rng_states: list | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().training_state(rng_states)
        meta["dalle2_step"] = self.step
        return tensors, meta

    def load(self, path: Any, only_model: bool = False, strict: bool = True) -> None:
        """Restore a checkpoint written by :meth:`save` (everything, or only the weights)."""
        from dalle2_pytorch.trainers.checkpoint import read_training_checkpoint

        super().load(path, only_model=only_model, strict=strict)
        if not only_model:
            self.step = int(read_training_checkpoint(path, type(self).__name__)[1]["dalle2_step"])


def _rows(text: Any) -> int:
    return text.shape[0] if isinstance(text, torch.Tensor) else len(text)


def _cut(text: Any, start: int, stop: int) -> Any:
    return text[start:stop] if isinstance(text, torch.Tensor) else list(text[start:stop])


def _join(parts: Sequence[Any]) -> Any:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [item for part in parts for item in part]


def _regrouped(loader: Iterable, batch_size: int | None) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(text, images)`` batches of exactly ``batch_size`` rows from ``loader``'s batches, passing over it again
    and again (its own batches when ``batch_size`` is None)."""
    texts: list[Any] = []
    images: list[torch.Tensor] = []
    held = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("the loader must yield (text, images) pairs of batches")
            text, image = batch
            if isinstance(text, str):
                text = [text]
            if _rows(text) != image.shape[0]:
                raise ValueError(f"a loader batch has {_rows(text)} texts but {image.shape[0]} images")
            if batch_size is None:
                yield text, image
                continue
            texts.append(text)
            images.append(image)
            held += image.shape[0]
            while held >= batch_size:
                text_all, image_all = _join(texts), torch.cat(images)
                yield _cut(text_all, 0, batch_size), image_all[:batch_size]
                held -= batch_size
                texts = [_cut(text_all, batch_size, None)] if held else []
                images = [image_all[batch_size:]] if held else []
        if empty:
            raise ValueError("the loader yielded no batches")

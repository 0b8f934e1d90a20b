"""The machinery shared by the trainers: one optimised *part* per independently trained module.

A part is a module inside the model (the prior's network, one unet of a decoder) with its own
AdamW, learning-rate schedule, grad scaler (fp16 only) and EMA.  The trainer runs the model's loss
on chunks of a batch (gradient accumulation), steps one part at a time, skips steps whose loss or
gradients are not finite, and saves/loads everything as one atomic safetensors checkpoint.

Distribution goes through Hugging Face ``accelerate``: the model sits on ``accelerator.device``,
and with several processes the gradients of the part being stepped are averaged across them just
before the step.  Averaging only the stepped part (instead of wrapping the model in DDP) is what
lets a cascade train one unet at a time without DDP's unused-parameter errors.  When the accelerate config asks
for FSDP, every part is sharded on its own instead and FSDP averages its gradients (:mod:`.sharding`); when it asks for
DeepSpeed, every part gets its own ZeRO stage 1/2 engine (:mod:`.zero`); Megatron-LM is refused.  Mixed precision
(``'fp16'`` with a gradient scaler, or ``'bf16'``) is ``torch.autocast`` around the loss.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from torch import nn

from dalle2_pytorch.errors import loading_state_dict
from dalle2_pytorch.serialization import _class_path, flatten_optimizer_state, unflatten_optimizer_state
from dalle2_pytorch.trainers.accumulation import split_batch
from dalle2_pytorch.trainers.compile import CompileSetting, compile_in_place
from dalle2_pytorch.trainers.checkpoint import (capture_rng_state, prefixed, rank_rng_states,
                                                read_training_checkpoint, restore_rank_rng_state, unprefixed,
                                                write_training_checkpoint)
from dalle2_pytorch.trainers.optim import LRSchedule, apply_learning_rate, check_positive
from dalle2_pytorch.trainers import zero
from dalle2_pytorch.trainers.sharding import (FSDPSettings, fsdp_settings, full_optimizer_state, gather_full,
                                              is_sharded, shard_like, shard_optimizer_state, shard_part)

PRECISIONS = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainedPart:
    """One independently optimised module and its bookkeeping."""

    name: str                      # 'prior' or 'unet1', 'unet2', ...
    module_path: str               # where the module sits inside the model ('net', 'unets.0', ...)
    module: nn.Module
    optimizer: torch.optim.Optimizer
    base_lr: float
    schedule: LRSchedule
    max_grad_norm: float | None
    ema: EMA | None
    scaler: torch.amp.GradScaler | None
    params: list[nn.Parameter] = field(default_factory=list)
    step: int = 0                  # optimiser steps taken
    skipped_steps: int = 0         # steps skipped for a non-finite loss or gradient
    consecutive_bad_steps: int = 0
    overflow_steps: int = 0        # fp16 steps skipped by the grad scaler (normal while it calibrates)
    pending_backward: bool = False
    pending_nonfinite: bool = False
    sharded: bool = False          # FSDP: the module, its EMA and the optimiser hold this process's shards
    engine: Any = None             # DeepSpeed: the ZeRO engine that owns the gradients and the optimiser state
    param_groups: list[list[nn.Parameter]] = field(default_factory=list)  # the optimiser's groups, as built

    def counters(self) -> dict[str, int]:
        return {"step": self.step, "skipped_steps": self.skipped_steps,
                "consecutive_bad_steps": self.consecutive_bad_steps, "overflow_steps": self.overflow_steps}


@torch.no_grad()
def copy_non_float_buffers(source: nn.Module, target: nn.Module) -> None:
    """ema-pytorch averages only float tensors: integer/bool buffers (a VAE's step counter, a codebook's flags) must
    follow the online module as they are, or the EMA copy would act as if untrained."""
    target_buffers = dict(target.named_buffers())
    for name, buffer in source.named_buffers():
        if not (buffer.is_floating_point() or buffer.is_complex()) and name in target_buffers:
            target_buffers[name].copy_(buffer)


def resolve_precision(mixed_precision: str | None, accelerator: Accelerator) -> str:
    """The precision a trainer uses: ``mixed_precision`` when given, else the accelerator's (``accelerate config``,
    ``accelerate launch --mixed_precision``).  Given and different from a non-default accelerator setting, it wins
    with a warning, never silently."""
    value = accelerator.mixed_precision if mixed_precision is None else mixed_precision
    if value not in PRECISIONS:
        raise ValueError(f"mixed_precision={value!r}: expected one of {sorted(PRECISIONS)}")
    if mixed_precision is not None and accelerator.mixed_precision not in ("no", mixed_precision):
        warnings.warn(f"mixed_precision={mixed_precision!r} (the trainer's / run config's setting) overrides "
                      f"accelerate's {accelerator.mixed_precision!r}; leave it unset to use accelerate's",
                      UserWarning, stacklevel=3)
    return value


class TrainerBase:
    """Shared core of every trainer: :class:`DiffusionPriorTrainer`, :class:`DecoderTrainer` and :class:`ModelTrainer`
    (CLIP, and the VAE under :class:`VQGanVAETrainer`); not used directly."""

    sharding_verified = False  # whether the trainer may shard its parts when the accelerate config asks for FSDP/ZeRO

    def __init__(self, model: nn.Module, *, accelerator: Accelerator | None, mixed_precision: str | None,
                 max_consecutive_bad_steps: int, device: str | torch.device | None = None) -> None:
        check_positive("max_consecutive_bad_steps", max_consecutive_bad_steps, integer=True)
        if accelerator is not None and not isinstance(accelerator, Accelerator):
            raise TypeError(f"accelerator must be an accelerate.Accelerator, got {type(accelerator).__name__}")
        # The trainer applies precision itself, so an Accelerator made here never fixes the process-wide
        # precision (accelerate keeps one per process): two trainers may use different ones.
        self.accelerator = accelerator if accelerator is not None else Accelerator()
        self.sharding: FSDPSettings | None = fsdp_settings(self.accelerator, model)
        self.zero: zero.ZeroSettings | None = zero.zero_settings(self.accelerator)
        if (self.sharding is not None or self.zero is not None) and not self.sharding_verified:
            what = "FSDP" if self.sharding is not None else "DeepSpeed"
            raise NotImplementedError(
                f"the accelerate config asks for {what}, which {type(self).__name__} does not support: it is verified "
                "for DecoderTrainer and DiffusionPriorTrainer only (a CLIP's or VAE's evaluation calls the model's "
                f"other methods, and a VAE's discriminator is a part nested in the model); train it without {what}")
        # ``device`` overrides the accelerator's (e.g. a VAE kept on the CPU of a GPU machine); single process only,
        # since the gradients of several processes are averaged on the accelerator's device.
        if device is not None and self.accelerator.num_processes > 1:
            raise ValueError(f"device={device!r} cannot be combined with {self.accelerator.num_processes} processes: "
                             "under `accelerate launch` each process trains on its accelerator's device")
        self._device = torch.device(device) if device is not None else self.accelerator.device
        self.mixed_precision = resolve_precision(mixed_precision, self.accelerator)
        if (self.sharding is not None or self.zero is not None) and self.mixed_precision == "fp16":
            raise NotImplementedError(f"mixed_precision='fp16' under {'FSDP' if self.sharding else 'DeepSpeed'}: the "
                                      "gradient scaler would see only this process's shard of the gradients; use "
                                      "'bf16' (no scaler needed)")
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.model = model.to(self._device)
        self.parts: dict[str, TrainedPart] = {}

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def _add_part(self, *, name: str, module_path: str, optimizer: torch.optim.Optimizer, lr: float,
                  schedule: LRSchedule, max_grad_norm: float | None, ema: EMA | None) -> None:
        check_positive("max_grad_norm", max_grad_norm, allow_none=True)
        module = self.model.get_submodule(module_path)
        scaler = torch.amp.GradScaler(self.device.type) if self.mixed_precision == "fp16" else None
        if self.sharding is not None:
            shard_part(module, optimizer, None if ema is None else ema.ema_model, self.sharding, self.device)
        groups = [list(group["params"]) for group in optimizer.param_groups]
        engine = None if self.zero is None else zero.build_engine(module, optimizer, self.zero, max_grad_norm)
        self.parts[name] = TrainedPart(name=name, module_path=module_path, module=module, optimizer=optimizer,
                                       base_lr=float(lr), schedule=schedule, max_grad_norm=max_grad_norm, ema=ema,
                                       scaler=scaler, params=[p for group in groups for p in group],
                                       sharded=self.sharding is not None, engine=engine, param_groups=groups)

    def compile(self, mode: CompileSetting = True, *, backend: str = "inductor") -> list[str]:
        """``torch.compile`` every trained part's module in place (the unets, the prior's network, a whole CLIP or
        VAE), for faster steps after the first ones; ``mode``: True, False or a torch.compile mode name.

        In place (``module.compile()``), so state-dict keys, checkpoints, the EMA and resuming are unchanged.
        Returns the module paths compiled (see :mod:`dalle2_pytorch.trainers.compile`)."""
        return compile_in_place({part.module_path: part.module for part in self.parts.values()}, mode,
                                backend=backend)

    def autocast(self) -> ContextManager:
        dtype = PRECISIONS[self.mixed_precision]
        return nullcontext() if dtype is None else torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        return value

    # ------------------------------------------------------------------ training
    def _forward_backward(self, part: TrainedPart, loss_fn: Callable[..., torch.Tensor], args: tuple,
                          kwargs: dict[str, Any], max_batch_size: int | None) -> float:
        """Loss of the whole batch (a float); gradients accumulate into the part's parameters."""
        args = tuple(self._to_device(a) for a in args)
        kwargs = {k: self._to_device(v) for k, v in kwargs.items()}
        if not part.pending_backward and part.engine is None:
            # a fresh accumulation: drop gradients another part's loss left here (a GAN's generator loss reaches
            # the discriminator's parameters); a ZeRO engine clears its own after each step
            part.optimizer.zero_grad(set_to_none=True)
        if not self.model.training:
            self.model.train()
        total: torch.Tensor | None = None
        for fraction, chunk_args, chunk_kwargs in split_batch(args, kwargs, max_batch_size):
            with self.autocast():
                loss = loss_fn(*chunk_args, **chunk_kwargs)
            if fraction != 1.0:
                loss = loss * fraction
            if part.engine is not None:
                part.engine.backward(loss, scale_wrt_gas=False)  # accumulates; the engine reduces at its step
            else:
                (part.scaler.scale(loss) if part.scaler is not None else loss).backward()
            total = loss.detach().float() if total is None else total + loss.detach().float()
        value = float(total.item())
        part.pending_backward = True
        if not math.isfinite(value):
            part.pending_nonfinite = True
        return value

    def _sync_gradients(self, part: TrainedPart) -> None:
        """Average the part's gradients over processes (a no-op in a single process, and under FSDP, whose
        reduce-scatter already averaged them)."""
        if self.accelerator.num_processes == 1 or part.sharded:
            return
        for p in part.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in part.params])
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p in part.params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def _update(self, part: TrainedPart) -> None:
        """One optimiser step of ``part`` (clip, step, EMA), or a counted skip when something is not finite."""
        if not part.pending_backward:
            raise RuntimeError(f"update() for {part.name} was called without a forward pass since the last update: "
                               "call the trainer on a batch first")
        if part.engine is not None:
            self._update_with_engine(part)
            return
        self._sync_gradients(part)
        if part.scaler is not None:
            part.scaler.unscale_(part.optimizer)
        grads = [p.grad for p in part.params if p.grad is not None]
        if part.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(part.params, part.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if is_sharded(norm):
            norm = norm.full_tensor()  # the norm over every process's shards, the same on all
        grads_finite = bool(torch.isfinite(norm))
        if grads_finite and not part.pending_nonfinite:
            apply_learning_rate(part.optimizer, part.base_lr, part.schedule, part.step)
            if part.scaler is not None:
                part.scaler.step(part.optimizer)
            else:
                part.optimizer.step()
            self._after_step(part)
        elif part.scaler is not None and not part.pending_nonfinite:
            part.overflow_steps += 1  # fp16 gradient overflow: the scaler lowers its scale and we go on
        else:
            self._count_bad_step(part, "loss" if part.pending_nonfinite else "gradient norm")
        if part.scaler is not None:
            part.scaler.update()
        part.optimizer.zero_grad(set_to_none=True)
        part.pending_backward = False
        part.pending_nonfinite = False

    def _after_step(self, part: TrainedPart) -> None:
        if part.ema is not None:
            part.ema.update()
            copy_non_float_buffers(part.module, part.ema.ema_model)
        part.step += 1
        part.consecutive_bad_steps = 0

    def _update_with_engine(self, part: TrainedPart) -> None:
        """The step of a part under DeepSpeed: the engine reduces, clips and steps, and skips the step when the
        gradients are not finite on any process (the same decision on every process)."""
        apply_learning_rate(part.optimizer, part.base_lr, part.schedule, part.step)
        if zero.step_applied(part.engine):
            self._after_step(part)
        else:
            self._count_bad_step(part, "loss" if part.pending_nonfinite else "gradient norm")
        part.pending_backward = False
        part.pending_nonfinite = False

    def _count_bad_step(self, part: TrainedPart, what: str) -> None:
        part.skipped_steps += 1
        part.consecutive_bad_steps += 1
        if part.consecutive_bad_steps >= self.max_consecutive_bad_steps:
            raise FloatingPointError(
                f"{part.name}: {part.consecutive_bad_steps} consecutive steps had a non-finite {what} "
                f"(max_consecutive_bad_steps={self.max_consecutive_bad_steps}); training has diverged. "
                "Lower the learning rate, set max_grad_norm, or resume from the last checkpoint")
        warnings.warn(f"{part.name}: non-finite {what}; skipped this optimiser step "
                      f"({part.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=3)

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Every part's EMA weights in place of its online ones (for evaluation, samples and ``ema_model/``).

        The online weights are put back on exit, also when the block raises."""
        online = {}
        for name, part in self.parts.items():
            if part.ema is not None:
                online[name] = {k: v.clone() for k, v in part.module.state_dict().items()}
                part.module.load_state_dict(part.ema.ema_model.state_dict())
        try:
            yield
        finally:
            for name, state in online.items():
                self.parts[name].module.load_state_dict(state)

    @property
    def has_ema(self) -> bool:
        return any(part.ema is not None for part in self.parts.values())

    # ------------------------------------------------------------------ checkpoints
    def _model_meta(self) -> dict[str, Any] | None:
        config = getattr(self.model, "config", None)
        return None if config is None else {"class": _class_path(type(self.model)), "config": config}

    def _rng_states_of_every_rank(self) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """Every process's RNG states, in rank order (a collective: every process must call it)."""
        local = capture_rng_state()
        if self.accelerator.num_processes == 1:
            return [local]
        from accelerate.utils import gather_object

        return gather_object([local])

    def training_state(self, rng_states: list | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every tensor and scalar of the training state (what :meth:`save` writes); ``rng_states``: those of every
        rank (:meth:`_rng_states_of_every_rank`), by default this process's alone."""
        from dalle2_pytorch import __version__

        tensors = prefixed(self.full_state_dict(), "model")
        parts_meta: dict[str, Any] = {}
        for name, part in self.parts.items():
            optimizer_state = (full_optimizer_state(part.optimizer) if part.engine is None
                               else zero.full_optimizer_state(part.engine, part.param_groups))
            opt_tensors, opt_rest = flatten_optimizer_state(optimizer_state, f"optim.{name}")
            tensors.update(opt_tensors)
            if part.ema is not None:
                tensors.update(prefixed(gather_full(part.ema.state_dict()), f"ema.{name}"))
            parts_meta[name] = {**part.counters(), "optimizer": opt_rest,
                                "scaler": None if part.scaler is None else part.scaler.state_dict()}
        rng_tensors, rng_meta = rank_rng_states(rng_states or [capture_rng_state()])
        tensors.update(rng_tensors)
        meta = {"kind": type(self).__name__, "library_version": __version__, "model": self._model_meta(),
                "parts": parts_meta, **rng_meta,
                "ema_targets": {n: p.module_path for n, p in self.parts.items() if p.ema is not None}}
        return tensors, meta

    @property
    def is_sharded(self) -> bool:
        """Whether the parts' state is sharded (FSDP, or ZeRO's optimiser state): then gathering it is a collective of
        every process."""
        return any(part.sharded or part.engine is not None for part in self.parts.values())

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with every sharded tensor gathered whole, as in a single process (under FSDP a
        collective: every process must call it)."""
        return gather_full(self.model.state_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Write a training checkpoint (one safetensors file, atomically; only the main process writes, but under
        FSDP every process gathers the full, unsharded state first)."""
        path = Path(path)
        rng_states = self._rng_states_of_every_rank()  # every rank's own stream, so that each resumes exactly
        if self.is_main_process or self.is_sharded:
            tensors, meta = self.training_state(rng_states)
        if self.is_main_process:
            write_training_checkpoint(path, tensors, meta)
        self.accelerator.wait_for_everyone()
        return path

    def load(self, path: str | os.PathLike, only_model: bool = False, strict: bool = True) -> None:
        """Restore a checkpoint written by :meth:`save` (everything, or only the model's weights).

        Learning rates, weight decay, eps and betas stay those given to this trainer's constructor,
        so they may be changed on resume.  Legacy ``.pt``/``.pth`` files are read as model weights
        only, with ``torch.load(weights_only=True)``.
        """
        path = Path(path)
        if path.suffix in (".pt", ".pth"):
            if self.is_sharded:
                raise NotImplementedError(f"{path}: a legacy checkpoint cannot be loaded into sharded (FSDP) parts; "
                                          "load it in one process without FSDP and save() it, then load that")
            self._load_legacy(path, strict)
            self._weights_loaded()
            return
        tensors, meta = read_training_checkpoint(path, type(self).__name__)
        with loading_state_dict(path, type(self.model).__name__):
            self.model.load_state_dict(shard_like(unprefixed(tensors, "model"), self.model.state_dict()), strict=strict)
        self._weights_loaded()
        if only_model:
            return
        if set(meta["parts"]) != set(self.parts):
            raise ValueError(f"{path} trained parts {sorted(meta['parts'])} but this trainer trains "
                             f"{sorted(self.parts)}; pass only_model=True to load the weights alone")
        for name, part in self.parts.items():
            saved = meta["parts"][name]
            optimizer_state = unflatten_optimizer_state(tensors, saved["optimizer"], f"optim.{name}")
            if part.engine is not None:
                zero.load_optimizer_state(part.engine, part.param_groups, optimizer_state)
            else:
                hyper = [{k: g[k] for k in ("weight_decay", "eps", "betas")} for g in part.optimizer.param_groups]
                part.optimizer.load_state_dict(optimizer_state)
                shard_optimizer_state(part.optimizer)
                for group, values in zip(part.optimizer.param_groups, hyper):
                    group.update(values)
            if part.ema is not None:
                ema_state = unprefixed(tensors, f"ema.{name}")
                if not ema_state:
                    raise ValueError(f"{path} has no EMA for {name}; build the trainer with use_ema=False or "
                                     "pass only_model=True")
                part.ema.load_state_dict(shard_like(ema_state, part.ema.state_dict()))
            if part.scaler is not None and saved.get("scaler"):
                part.scaler.load_state_dict(saved["scaler"])
            part.step, part.skipped_steps = int(saved["step"]), int(saved["skipped_steps"])
            part.consecutive_bad_steps = int(saved["consecutive_bad_steps"])
            part.overflow_steps = int(saved["overflow_steps"])
            part.pending_backward = part.pending_nonfinite = False
        restore_rank_rng_state(tensors, meta, self.accelerator.process_index, self.accelerator.num_processes)

    def _weights_loaded(self) -> None:
        """After weights were loaded into the model: ZeRO engines copy them into the masters they step."""
        for part in self.parts.values():
            if part.engine is not None:
                zero.load_weights(part.engine, part.params)

    def _load_legacy(self, path: Path, strict: bool) -> None:
        from dalle2_pytorch.serialization import load_legacy_state_dict

        self.model.load_state_dict(load_legacy_state_dict(path), strict=strict)

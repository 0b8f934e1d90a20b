"""VQGanVAETrainer: the reference trainer's API for a :class:`~dalle2_pytorch.vae.VQGanVAE`, over the trainers' core.

The optimisers, EMA, clipping, non-finite-step skipping, bfloat16 autocast and checkpoints are those of every trainer
(:class:`~dalle2_pytorch.trainers.model_trainer.ModelTrainer`: part ``model`` is the autoencoder, part ``discr`` the
discriminator).  This class adds what the reference trainer's users expect: cycling over any iterable of image
batches, the generator/discriminator alternation with the gradient penalty every ``apply_grad_penalty_every`` steps,
gradient accumulation over ``grad_accum_every`` batches, sample grids and checkpoint folders every few steps.

Unlike the reference trainer, the keyword passed to the VAE is the one it reads (``add_gradient_penalty``), the
discriminator loss exists whether or not the penalty is on, and ``ema_beta`` is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from accelerate import Accelerator

from dalle2_pytorch.images import make_grid, save_image
from dalle2_pytorch.trainers.checkpoint import load_checkpoint, read_counters, save_checkpoint
from dalle2_pytorch.serialization import load_json, load_tensors, unflatten_optimizer_state
from dalle2_pytorch.trainers.model_trainer import ModelTrainer
from dalle2_pytorch.vae.vqgan_vae import VQGanVAE
from dalle2_pytorch.validation import strict_keywords

_END = object()


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


class VQGanVAETrainer:
    """Train a VQGanVAE on ``data``: any iterable (e.g. a DataLoader) of image batches (b, c, h, w).

    A batch may also be a tuple/list whose first element is the images (e.g. ``(images, captions)``).  Pixel
    values span ``data_range`` and are mapped to [-1, 1].  The iterable is restarted when exhausted.
    Every ``save_results_every`` steps a PNG grid (originals / reconstructions / EMA reconstructions) is
    written to ``results_folder/samples``; every ``save_model_every`` steps and at the end of :meth:`train` a
    checkpoint folder to ``results_folder/checkpoints`` (the trainers' format, see
    :mod:`dalle2_pytorch.trainers.checkpoint`: ``model/`` and ``ema_model/`` load with ``VQGanVAE.from_pretrained``).
    ``amp=True`` runs forward passes under ``torch.autocast`` in bfloat16 (CPU and GPU; no loss scaling needed).
    ``device`` defaults to where the VAE's parameters are; ``accelerator`` (an ``accelerate.Accelerator``) is for
    ``accelerate launch`` runs, where each process trains on its own device.
    """

    @strict_keywords()
    def __init__(self, vae: VQGanVAE, *, data: Iterable, num_train_steps: int, lr: float = 3e-4,
                 discr_lr: float | None = None, wd: float = 0.0, grad_accum_every: int = 1,
                 max_grad_norm: float | None = None, apply_grad_penalty_every: int = 4, ema_beta: float = 0.995,
                 ema_update_after_step: int = 500, ema_update_every: int = 10, amp: bool = False,
                 data_range: tuple[float, float] = (-1.0, 1.0), save_results_every: int = 100,
                 save_model_every: int = 1000, results_folder: str | os.PathLike = "./results",
                 num_sample_images: int = 8, device: str | torch.device | None = None,
                 accelerator: Accelerator | None = None) -> None:
        if not isinstance(vae, VQGanVAE):
            raise TypeError(f"vae must be a VQGanVAE, got {type(vae).__name__}")
        for name, value in (("num_train_steps", num_train_steps), ("grad_accum_every", grad_accum_every),
                            ("save_results_every", save_results_every), ("save_model_every", save_model_every),
                            ("num_sample_images", num_sample_images)):
            _check_count(name, value, 1)
        _check_count("apply_grad_penalty_every (0 = never)", apply_grad_penalty_every, 0)
        low, high = data_range
        if not high > low:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
        if not hasattr(data, "__iter__"):
            raise TypeError(f"data must be an iterable of image batches (e.g. a DataLoader), got {type(data).__name__}")
        if device is None and accelerator is None:
            device = next(vae.parameters()).device
        self.trainer = ModelTrainer(vae, accelerator=accelerator, mixed_precision="bf16" if amp else "no", lr=lr,
                                    wd=wd, max_grad_norm=max_grad_norm, ema_beta=ema_beta,
                                    ema_update_after_step=ema_update_after_step, ema_update_every=ema_update_every,
                                    separate=("discr",) if vae.discr is not None else (), separate_lr=discr_lr,
                                    device=device)
        self.data, self.data_range = data, (float(low), float(high))
        self.num_train_steps, self.grad_accum_every = num_train_steps, grad_accum_every
        self.apply_grad_penalty_every, self.amp = apply_grad_penalty_every, amp
        self.save_results_every, self.save_model_every = save_results_every, save_model_every
        self.results_folder, self.num_sample_images = Path(results_folder), num_sample_images
        # the loop's counters, saved in checkpoints (same names as the config-driven runs')
        self.counters = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "samples_seen": 0}
        self._batches: Iterator | None = None
        self._sample_batch: torch.Tensor | None = None

    # ------------------------------------------------------------------ the core's objects, by their old names
    @property
    def vae(self) -> VQGanVAE:
        return self.trainer.model

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    @property
    def step(self) -> int:
        """Training steps taken (one generator and, with a discriminator, one discriminator update each)."""
        return self.counters["step"]

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{'gen': ..., 'discr': ...}`` (``discr`` only when the VAE has a discriminator)."""
        names = {"model": "gen", "discr": "discr"}
        return {names[name]: part.optimizer for name, part in self.trainer.parts.items()}

    @property
    def ema(self):
        """The ``ema_pytorch.EMA`` of the whole VAE."""
        return self.trainer.parts["model"].ema

    @property
    def ema_vae(self) -> VQGanVAE:
        return self.ema.ema_model

    # ------------------------------------------------------------------ data
    def _prepare(self, batch: object) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"data must yield image batches of shape (b, c, h, w), got {shape}; wrap a dataset "
                             "of single images in a torch.utils.data.DataLoader")
        images = images.to(self.device, torch.float32)
        low, high = self.data_range
        return (images - low) / (high - low) * 2 - 1

    def next_batch(self) -> torch.Tensor:
        """The next batch of ``data`` mapped to [-1, 1], starting a new pass over ``data`` when one ends."""
        counters = self.counters
        while True:
            if self._batches is None:
                self._batches = iter(self.data)
            batch = next(self._batches, _END)
            if batch is not _END:
                break
            if counters["batch_in_epoch"] == 0:
                raise ValueError("data yielded no batches")
            self._batches = None
            counters["epoch"] += 1
            counters["batch_in_epoch"] = 0
        counters["batch_in_epoch"] += 1
        images = self._prepare(batch)
        counters["samples_seen"] += images.shape[0]
        if self._sample_batch is None:
            self._sample_batch = images[: self.num_sample_images].clone()
        return images

    def _seek(self, batch_in_epoch: int) -> None:
        """Start a pass over ``data`` and skip the batches the checkpoint's run had drawn from its pass."""
        self._batches = iter(self.data)
        for index in range(batch_in_epoch):
            if next(self._batches, _END) is _END:
                raise ValueError(f"the checkpoint was {batch_in_epoch} batches into a pass over its data, but data "
                                 f"has only {index} batches: resume with the same data")

    # ------------------------------------------------------------------ steps
    def _accumulate(self, part: str, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Mean loss of ``grad_accum_every`` batches, their gradients summed into ``part``, then one update."""
        n, total = self.grad_accum_every, 0.0
        for _ in range(n):
            images = self.next_batch()
            total += self.trainer(lambda: loss_fn(images) / n, part)
        self.trainer.update(part)
        return total

    def train_step(self) -> dict[str, float]:
        """One generator update (and one discriminator update when the VAE has a discriminator)."""
        vae = self.vae
        logs = {"loss": self._accumulate("model", lambda images: vae(images, return_loss=True))}
        if "discr" in self.trainer.parts:
            every = self.apply_grad_penalty_every
            penalty = every > 0 and self.step % every == 0
            logs["discr_loss"] = self._accumulate(
                "discr", lambda images: vae(images, return_discr_loss=True, add_gradient_penalty=penalty))
        self.counters["step"] += 1
        logs["step"] = self.step
        if self.step % self.save_results_every == 0:
            self.save_samples()
        if self.step % self.save_model_every == 0:
            self.save(self.checkpoint_path())
        return logs

    def train(self, log_fn: Callable[[dict[str, float]], None] | None = None) -> None:
        """Run :meth:`train_step` until ``num_train_steps`` and write a final checkpoint."""
        while self.step < self.num_train_steps:
            logs = self.train_step()
            if log_fn is not None:
                log_fn(logs)
        self.save(self.checkpoint_path())

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def save_samples(self) -> Path:
        """Write ``samples/step-XXXXXXXX.png``: originals, reconstructions, EMA reconstructions (one row each)."""
        if self._sample_batch is None:
            self.next_batch()
        images = self._sample_batch
        rows = [images]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # samples must not shift the training run's random stream
            for model in (self.vae, self.ema_vae):
                was_training = model.training
                model.eval()
                with self.trainer.autocast():
                    rows.append(model(images).float().clamp(-1, 1))
                model.train(was_training)
        path = self.results_folder / "samples" / f"step-{self.step:08d}.png"
        if self.trainer.is_main_process:
            save_image(make_grid(rows), path, value_range=(-1.0, 1.0))
        return path

    def checkpoint_path(self) -> Path:
        return self.results_folder / "checkpoints" / f"step-{self.step:08d}"

    def save(self, folder: str | os.PathLike) -> Path:
        """Write a checkpoint folder: ``model/``, ``ema_model/``, the trainer's state and this loop's counters."""
        return save_checkpoint(folder, self.trainer, dict(self.counters))

    def load(self, folder: str | os.PathLike) -> None:
        """Resume from a folder written by :meth:`save` (the VAE must have the same configuration).

        Weights, optimisers, EMA, RNG states and the position in ``data`` (the batches drawn from the current pass
        are skipped) are restored, so that with data in the same order on every pass (a list, a DataLoader without
        shuffling) the run continues bit for bit as if it had not stopped.  A shuffling DataLoader continues with a
        fresh order for the rest of its pass.
        """
        counters = read_counters(folder)
        if counters is None and (Path(folder) / "trainer.json").is_file():
            self._load_first_format(Path(folder))
            return
        if counters is None:
            raise FileNotFoundError(f"{folder} is not a checkpoint folder (written by VQGanVAETrainer.save)")
        counters = {**self.counters, **counters}
        self._seek(int(counters["batch_in_epoch"]))  # before the RNG states are restored: iter() may draw from them
        load_checkpoint(folder, self.trainer)
        self.counters = {key: counters[key] for key in self.counters}

    def _load_first_format(self, folder: Path) -> None:
        """A folder written by this trainer before it moved onto the trainers' core (until 2026-11: ``model/``,
        ``ema_model/``, ``trainer.safetensors`` with the ``gen``/``discr`` optimisers and the EMA wrapper's state,
        ``trainer.json`` with the step).  It holds no RNG states and no position in the data, so training continues
        with the current random state from the start of a pass over ``data``; the next save writes today's format."""
        meta = load_json(folder / "trainer.json")
        part_names = {"gen": "model", "discr": "discr"}
        saved = sorted(meta["optimizers"])
        if sorted(part_names.get(name, name) for name in saved) != sorted(self.trainer.parts):
            raise ValueError(f"{folder} holds optimisers {saved}, this trainer has {sorted(self.optimizers)}: "
                             "was the VAE built with the same use_vgg_and_gan?")
        tensors = load_tensors(folder / "trainer.safetensors", device=self.device)
        self.vae.load_state_dict(load_tensors(folder / "model" / "model.safetensors", device=self.device))
        step = int(meta["step"])
        for name, rest in meta["optimizers"].items():
            part = self.trainer.parts[part_names[name]]
            saved_state = unflatten_optimizer_state(tensors, rest, f"optim.{name}")["state"]
            # the first format had one parameter group in the order of the module's trainable parameters; today's
            # optimisers split them into groups (weight decay or not): move each parameter's moments by identity
            if name == "gen":
                discr = {id(p) for p in self.vae.discr.parameters()} if self.vae.discr is not None else set()
                old_order = [p for p in self.vae.parameters() if p.requires_grad and id(p) not in discr]
            else:
                old_order = list(self.vae.discr.parameters())
            old_index = {id(p): i for i, p in enumerate(old_order)}
            current = part.optimizer.state_dict()
            new_order = [p for group in part.optimizer.param_groups for p in group["params"]]
            current["state"] = {i: saved_state[old_index[id(p)]] for i, p in enumerate(new_order)
                                if old_index[id(p)] in saved_state}
            part.optimizer.load_state_dict(current)
            part.step = step  # one generator and one discriminator update per step
        self.ema.load_state_dict({key[len("ema."):]: value for key, value in tensors.items() if key.startswith("ema.")})
        self.counters = {**self.counters, "step": step, "batch_in_epoch": 0}
        self._batches = None

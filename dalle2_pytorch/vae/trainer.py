"""Training loop for :class:`~dalle2_pytorch.vae.VQGanVAE`: generator and discriminator steps, EMA, AMP.

Each step runs the generator (autoencoder) update over ``grad_accum_every`` batches, then, when the VAE has a
discriminator, the discriminator update over as many batches, with the gradient penalty every
``apply_grad_penalty_every`` steps.  Unlike the reference trainer, the keyword passed to the VAE is the one it
reads (``add_gradient_penalty``) and the discriminator loss exists whether or not the penalty is on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from ema_pytorch import EMA

from dalle2_pytorch.vae.image_grid import make_grid, save_png
from dalle2_pytorch.vae.trainer_checkpoint import read_checkpoint, write_checkpoint
from dalle2_pytorch.vae.vqgan_vae import VQGanVAE


class VQGanVAETrainer:
    """Train a VQGanVAE on ``data``: any iterable (e.g. a DataLoader) of image batches (b, c, h, w).

    A batch may also be a tuple/list whose first element is the images (e.g. ``(images, captions)``).  Pixel
    values span ``data_range`` and are mapped to [-1, 1].  The iterable is restarted when exhausted.
    Every ``save_results_every`` steps a PNG grid (originals / reconstructions / EMA reconstructions) is
    written to ``results_folder/samples``; every ``save_model_every`` steps and at the end of :meth:`train` a
    checkpoint folder to ``results_folder/checkpoints`` (see :mod:`dalle2_pytorch.vae.trainer_checkpoint`).
    ``amp=True`` runs forward passes under ``torch.autocast`` in bfloat16 (CPU and GPU; no loss scaling needed).
    """

    def __init__(self, vae: VQGanVAE, *, data: Iterable, num_train_steps: int, lr: float = 3e-4,
                 discr_lr: float | None = None, wd: float = 0.0, grad_accum_every: int = 1,
                 max_grad_norm: float | None = None, apply_grad_penalty_every: int = 4, ema_beta: float = 0.995,
                 ema_update_after_step: int = 500, ema_update_every: int = 10, amp: bool = False,
                 data_range: tuple[float, float] = (-1.0, 1.0), save_results_every: int = 100,
                 save_model_every: int = 1000, results_folder: str | os.PathLike = "./results",
                 num_sample_images: int = 8, device: str | torch.device | None = None) -> None:
        if not isinstance(vae, VQGanVAE):
            raise TypeError(f"vae must be a VQGanVAE, got {type(vae).__name__}")
        for name, value in (("num_train_steps", num_train_steps), ("grad_accum_every", grad_accum_every),
                            ("save_results_every", save_results_every), ("save_model_every", save_model_every),
                            ("num_sample_images", num_sample_images)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(apply_grad_penalty_every, int) or apply_grad_penalty_every < 0:
            raise ValueError(f"apply_grad_penalty_every must be an int >= 0 (0 = never), got {apply_grad_penalty_every!r}")
        low, high = data_range
        if not high > low:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
        if not hasattr(data, "__iter__"):
            raise TypeError(f"data must be an iterable of image batches (e.g. a DataLoader), got {type(data).__name__}")

        self.device = torch.device(device) if device is not None else next(vae.parameters()).device
        self.vae = vae.to(self.device)
        self.data, self.data_range = data, (float(low), float(high))
        self.num_train_steps, self.grad_accum_every = num_train_steps, grad_accum_every
        self.max_grad_norm, self.apply_grad_penalty_every, self.amp = max_grad_norm, apply_grad_penalty_every, amp
        self.save_results_every, self.save_model_every = save_results_every, save_model_every
        self.results_folder, self.num_sample_images = Path(results_folder), num_sample_images

        discr_params = list(vae.discr.parameters()) if vae.discr is not None else []
        discr_ids = {id(p) for p in discr_params}
        gen_params = [p for p in vae.parameters() if p.requires_grad and id(p) not in discr_ids]
        self.optimizers = {"gen": torch.optim.AdamW(gen_params, lr=lr, weight_decay=wd)}
        if discr_params:
            self.optimizers["discr"] = torch.optim.AdamW(discr_params, lr=lr if discr_lr is None else discr_lr,
                                                         weight_decay=wd)
        self.ema = EMA(vae, beta=ema_beta, update_after_step=ema_update_after_step,
                       update_every=ema_update_every, include_online_model=False)
        self.step = 0
        self._batches: Iterator[torch.Tensor] | None = None
        self._sample_batch: torch.Tensor | None = None

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

    def _cycle(self) -> Iterator[torch.Tensor]:
        while True:
            empty = True
            for batch in self.data:
                empty = False
                yield self._prepare(batch)
            if empty:
                raise ValueError("data yielded no batches")

    def next_batch(self) -> torch.Tensor:
        if self._batches is None:
            self._batches = self._cycle()
        batch = next(self._batches)
        if self._sample_batch is None:
            self._sample_batch = batch[: self.num_sample_images].clone()
        return batch

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _optimizer_step(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def train_step(self) -> dict[str, float]:
        """One generator update (and one discriminator update when the VAE has a discriminator)."""
        self.vae.train()
        logs: dict[str, float] = {}
        total = 0.0
        for _ in range(self.grad_accum_every):
            with self._autocast():
                loss = self.vae(self.next_batch(), return_loss=True)
            (loss / self.grad_accum_every).backward()
            total += loss.item() / self.grad_accum_every
        logs["loss"] = total
        self._optimizer_step("gen")

        if "discr" in self.optimizers:
            self.optimizers["discr"].zero_grad(set_to_none=True)  # drop what the generator loss left there
            penalty = self.apply_grad_penalty_every > 0 and self.step % self.apply_grad_penalty_every == 0
            total = 0.0
            for _ in range(self.grad_accum_every):
                with self._autocast():
                    discr_loss = self.vae(self.next_batch(), return_discr_loss=True, add_gradient_penalty=penalty)
                (discr_loss / self.grad_accum_every).backward()
                total += discr_loss.item() / self.grad_accum_every
            logs["discr_loss"] = total
            self._optimizer_step("discr")
            self.optimizers["gen"].zero_grad(set_to_none=True)

        self.ema.update()
        self._copy_non_float_buffers_to_ema()
        self.step += 1
        logs["step"] = self.step
        if self.step % self.save_results_every == 0:
            self.save_samples()
        if self.step % self.save_model_every == 0:
            self.save(self.checkpoint_path())
        return logs

    @torch.no_grad()
    def _copy_non_float_buffers_to_ema(self) -> None:
        """ema-pytorch averages only float tensors; the codebook's ``initted`` flag and the step counter must
        follow the online model too, or the EMA copy would re-run k-means on its first forward."""
        ema_buffers = dict(self.ema_vae.named_buffers())
        for name, buffer in self.vae.named_buffers():
            if not buffer.is_floating_point():
                ema_buffers[name].copy_(buffer)

    def train(self, log_fn: Callable[[dict[str, float]], None] | None = None) -> None:
        """Run :meth:`train_step` until ``num_train_steps`` and write a final checkpoint."""
        while self.step < self.num_train_steps:
            logs = self.train_step()
            if log_fn is not None:
                log_fn(logs)
        self.save(self.checkpoint_path())

    # ------------------------------------------------------------------ outputs
    @property
    def ema_vae(self) -> VQGanVAE:
        return self.ema.ema_model

    @torch.no_grad()
    def save_samples(self) -> Path:
        """Write ``samples/step-XXXXXXXX.png``: originals, reconstructions, EMA reconstructions (one row each)."""
        if self._sample_batch is None:
            self.next_batch()
        images = self._sample_batch
        rows = [images]
        for model in (self.vae, self.ema_vae):
            was_training = model.training
            model.eval()
            with self._autocast():
                rows.append(model(images).float().clamp(-1, 1))
            model.train(was_training)
        path = self.results_folder / "samples" / f"step-{self.step:08d}.png"
        save_png(make_grid(rows), path)
        return path

    def checkpoint_path(self) -> Path:
        return self.results_folder / "checkpoints" / f"step-{self.step:08d}"

    def save(self, folder: str | os.PathLike) -> Path:
        """Write model, EMA model, optimisers and step (see :mod:`~dalle2_pytorch.vae.trainer_checkpoint`)."""
        return write_checkpoint(folder, model=self.vae, ema_model=self.ema_vae, optimizers=self.optimizers,
                                ema_state=self.ema.state_dict(), step=self.step)

    def load(self, folder: str | os.PathLike) -> None:
        """Resume from a folder written by :meth:`save` (the VAE must have the same configuration)."""
        folder = Path(folder)
        step, optimizer_states, ema_state = read_checkpoint(folder, device=self.device)
        weights = VQGanVAE.from_pretrained(folder / "model", map_location=self.device).state_dict()
        self.vae.load_state_dict(weights)
        if set(optimizer_states) != set(self.optimizers):
            raise ValueError(f"{folder} holds optimisers {sorted(optimizer_states)}, this trainer has "
                             f"{sorted(self.optimizers)}: was the VAE built with the same use_vgg_and_gan?")
        for name, state in optimizer_states.items():
            self.optimizers[name].load_state_dict(state)
        self.ema.load_state_dict(ema_state)
        self.step = step

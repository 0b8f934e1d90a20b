"""Batches and a deterministic stand-in model shared by the trainer tests (tiny models: tests/factories.py)."""

from __future__ import annotations

import torch
from torch import nn

from dalle2_pytorch.trainers.base import TrainerBase
from dalle2_pytorch.trainers.optim import LRSchedule, build_adamw
from tests.factories import EMBED_DIM, tiny_decoder, tiny_prior, tiny_unet  # noqa: F401 (used by the trainer tests)

def batch(rows: int = 4, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1], image embeddings) drawn from their own generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, 3, size, size, generator=g), torch.randn(rows, EMBED_DIM, generator=g)


class Regression(nn.Module):
    """A deterministic model whose forward is a loss: mean squared error of a small MLP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()


class RegressionTrainer(TrainerBase):
    """The shared trainer core around :class:`Regression` (one part, no EMA)."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-2, mixed_precision: str | None = "no",
                 max_grad_norm: float | None = None, max_consecutive_bad_steps: int = 3) -> None:
        super().__init__(model, accelerator=None, mixed_precision=mixed_precision,
                         max_consecutive_bad_steps=max_consecutive_bad_steps)
        optimizer = build_adamw(self.model, lr=lr, wd=0.1, eps=1e-8, betas=(0.9, 0.99))
        self._add_part(name="net", module_path="", optimizer=optimizer, lr=lr, schedule=LRSchedule(),
                       max_grad_norm=max_grad_norm, ema=None)

    def __call__(self, *args, max_batch_size=None, **kwargs) -> float:
        return self._forward_backward(self.parts["net"], self.model, args, kwargs, max_batch_size)

    def update(self) -> None:
        self._update(self.parts["net"])


def load_distributed_checkpoint(folder, kind: str):
    """A single-process trainer of ``kind`` ('decoder' or 'prior') loaded from the checkpoint folder a 2-process
    worker wrote at ``folder/kind``, its training state, and the plain 2-process run's state
    (``folder/plain_<kind>.safetensors``) to compare with; RNG states left out of both."""
    import warnings

    from safetensors.torch import load_file

    from dalle2_pytorch.trainers.checkpoint import load_checkpoint
    from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
    from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer

    trainer = DecoderTrainer(tiny_decoder(2)) if kind == "decoder" else DiffusionPriorTrainer(tiny_prior())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saved by 2 processes: the RNG states are not this one's
        load_checkpoint(folder / kind, trainer)
    state, _ = trainer.training_state()
    plain = load_file(folder / f"plain_{kind}.safetensors")
    state = {k: v for k, v in state.items() if not k.startswith("rng")}
    plain = {k: v for k, v in plain.items() if not k.startswith("rng")}
    assert state.keys() == plain.keys(), sorted(set(state) ^ set(plain))
    return trainer, state, plain


def worker_folder(tmp_path_factory, name: str):
    """Run ``tests/trainers/<name>_worker.py`` in 2 processes (it must print ``<NAME>_OK``); the folder it wrote."""
    from tests.runs.distributed import run_worker_module

    folder = tmp_path_factory.mktemp(name)
    run_worker_module(f"tests.trainers.{name}_worker", folder, f"{name.upper()}_OK", timeout=300)
    return folder

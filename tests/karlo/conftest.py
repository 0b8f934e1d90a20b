"""Tiny random Karlo components (diffusers layout), built once per test process; every test here needs diffusers."""

import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from dalle2_pytorch.karlo.tiny import build_tiny_components, save_components  # noqa: E402


def float64_tables(scheduler) -> None:
    """Hold an UnCLIPScheduler's β/ᾱ tables in float64 (its own are float32, in which 1 - ᾱ_0 = 4.13e-5 is off
    by 5e-4 relative, so its last DDPM step scales x0 by 0.99947)."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    steps = scheduler.config.num_train_timesteps
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                         dtype=torch.float64)
    scheduler.betas, scheduler.alphas = betas, 1 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)


@pytest.fixture(scope="session")
def karlo_components():
    """The UnCLIPPipeline keyword arguments of a tiny random Karlo (8 px decoder, 16 px super-resolution)."""
    return build_tiny_components(seed=0)


@pytest.fixture(scope="session")
def karlo_folder(karlo_components, tmp_path_factory):
    """The same components saved in the diffusers folder layout."""
    return save_components(karlo_components, tmp_path_factory.mktemp("karlo") / "tiny-karlo")


@pytest.fixture(scope="session")
def karlo_pipeline(karlo_folder):
    from dalle2_pytorch.karlo import KarloPipeline

    return KarloPipeline.from_pretrained(karlo_folder)

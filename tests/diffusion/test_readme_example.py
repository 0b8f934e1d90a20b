"""The README's "Diffusion core" example runs as written."""

import torch

from tests.readme_blocks import python_blocks


def test_diffusion_core_readme_example_runs():
    (example,) = python_blocks("Diffusion core")
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(example, "diffusion_core_example", "exec"), namespace)
    assert namespace["samples"].shape == (4, 8) and torch.isfinite(namespace["loss"])

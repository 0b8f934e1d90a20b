"""The README examples of the Training and DALLE2 sections (the seed README's calls at CPU sizes) run."""

import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "readme"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.slow
def test_training_examples_run(tmp_path, monkeypatch):
    decoder_example, prior_example, saving_example = python_blocks("80_training.md")[:3]
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(decoder_example, "decoder_example", "exec"), namespace)
    assert namespace["images"].shape == (8, 3, 32, 32)
    assert namespace["decoder_trainer"].num_steps_taken(1) == 1
    exec(compile(prior_example, "prior_example", "exec"), namespace)
    assert namespace["image_embeds"].shape == (8, 64)
    monkeypatch.chdir(tmp_path)
    exec(compile(saving_example, "saving_example", "exec"), namespace)
    assert namespace["decoder"].num_unets == 2
    exec(compile(python_blocks("85_dalle2.md")[0], "dalle2_example", "exec"), namespace)
    assert namespace["images"].shape == (1, 3, 32, 32) and len(namespace["pil_images"]) == 1

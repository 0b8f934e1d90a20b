"""The README examples of the Training and DALLE2 sections (the seed README's calls at CPU sizes) run."""

import pytest
import torch

from tests.readme_blocks import python_blocks


@pytest.mark.slow
def test_training_examples_run(tmp_path, monkeypatch):
    decoder_example, prior_example = python_blocks("Training")[:2]
    saving_example = python_blocks("Saving and loading")[0]
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
    exec(compile(python_blocks("Text to image: the DALLE2 pipeline")[0], "dalle2_example", "exec"), namespace)
    assert namespace["images"].shape == (1, 3, 32, 32) and len(namespace["pil_images"]) == 1

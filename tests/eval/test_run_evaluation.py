"""run_evaluation on tiny saved pipelines (untrained: only the wiring is checked): the older `dalle2 demo` layout and
DALLE2.save_pretrained's, whose sampling defaults eval must use, through DALLE2."""

import json
import math

import pytest
import torch

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.dalle2 import DALLE2, SamplingDefaults
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.eval import run_evaluation
from dalle2_pytorch.prior import DiffusionPrior, DiffusionPriorNetwork
from tests.serve.tiny_model import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("checkpoints")
    clip = CLIP(dim_text=16, dim_image=16, dim_latent=16, num_text_tokens=VOCAB_SIZE, text_enc_depth=1, text_seq_len=8,
                text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8,
                visual_image_size=16, visual_patch_size=4, visual_patch_dropout=0.0)
    adapter = BuiltinClipAdapter(clip)
    prior = DiffusionPrior(DiffusionPriorNetwork(16, depth=1, dim_head=8, heads=2, max_text_len=8), clip=adapter,
                           timesteps=10, condition_on_text_encodings=False)
    decoder = Decoder(unet=Unet(dim=8, image_embed_dim=16, cond_dim=8, dim_mults=(1, 2), num_resnet_blocks=1,
                                attn_heads=2, attn_dim_head=8), clip=adapter, image_size=16, timesteps=10,
                      learned_variance=False)
    clip.save_pretrained(root / "clip")
    prior.save_pretrained(root / "prior")
    decoder.save_pretrained(root / "decoder")
    (root / "sampling.json").write_text(json.dumps({"prior": {"steps": 2, "sampler": "ddim"},
                                                    "decoder": {"steps": 2, "sampler": "ddim"}}))
    return root


def test_run_evaluation_returns_every_metric(checkpoint_dir):
    metrics = run_evaluation(checkpoint_dir, images_per_caption=1, num_real_images=24)
    expected = {"faithfulness", "colour_accuracy", "shape_accuracy", "no_shape_rate", "fid", "kid_mean", "kid_std",
                "clip_score", "clip_score_unrelated", "clip_score_gap", "prior_baseline_similarity",
                "prior_similarity_with_text", "prior_difference_from_baseline", "prior_similarity_with_image",
                "prior_similarity_with_unrelated_caption", "num_images", "seconds"}
    assert set(metrics) == expected
    assert metrics["num_images"] == 18
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics["fid"] > 0  # random pixels from an untrained decoder are far from the toy images


def test_run_evaluation_argument_errors(checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        run_evaluation(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        run_evaluation(tmp_path)
    with pytest.raises(ValueError, match="features"):
        run_evaluation(checkpoint_dir, features="inception")
    with pytest.raises(ValueError, match="images_per_caption"):
        run_evaluation(checkpoint_dir, images_per_caption=0)


def test_run_evaluation_samples_through_dalle2_with_the_saved_defaults(tmp_path, monkeypatch):
    import dalle2_pytorch.eval.run as run_module

    directory = save_tiny_checkpoint(tmp_path / "dalle2")
    calls, prior_calls = [], []
    real_forward, real_evaluate_prior = DALLE2.forward, run_module.evaluate_prior

    def spy_forward(self, text, *args, **kwargs):
        calls.append((self.sampling_defaults, kwargs))
        return real_forward(self, text, *args, **kwargs)

    def spy_evaluate_prior(*args, **kwargs):
        prior_calls.append(kwargs)
        return real_evaluate_prior(*args, **kwargs)

    monkeypatch.setattr(DALLE2, "forward", spy_forward)
    monkeypatch.setattr(run_module, "evaluate_prior", spy_evaluate_prior)
    first = run_evaluation(directory, images_per_caption=1, num_real_images=24)
    saved = SamplingDefaults.from_dict(json.loads((directory / "pipeline.json").read_text())["sampling"])
    assert len(calls) == 1 and calls[0][0] == saved
    assert all(kwargs.get(name) is None for name in ("cond_scale", "steps", "sampler", "prior_steps")
               for kwargs in [calls[0][1]])  # nothing overrides the file's defaults
    assert (prior_calls[0]["timesteps"], prior_calls[0]["sampler"]) == (saved.prior_steps, saved.prior_sampler)

    spec = json.loads((directory / "pipeline.json").read_text())
    spec["sampling"]["decoder"].update(steps=[2, 2], sampler="euler")
    spec["sampling"]["prior"].update(steps=3)
    (directory / "pipeline.json").write_text(json.dumps(spec))
    edited = run_evaluation(directory, images_per_caption=1, num_real_images=24)
    assert calls[1][0].steps == (2, 2) and prior_calls[1]["timesteps"] == 3
    assert edited["fid"] != first["fid"]

"""run_evaluation on a tiny saved pipeline in the `dalle2 demo` layout (untrained: only the wiring is checked)."""

import json
import math

import pytest
import torch

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.eval import run_evaluation
from dalle2_pytorch.prior import DiffusionPrior, DiffusionPriorNetwork


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
    with pytest.raises(ValueError, match="lacks"):
        run_evaluation(tmp_path)
    with pytest.raises(ValueError, match="features"):
        run_evaluation(checkpoint_dir, features="inception")
    with pytest.raises(ValueError, match="images_per_caption"):
        run_evaluation(checkpoint_dir, images_per_caption=0)

"""The reference's own training-config JSON (TrainDiffusionPriorConfig / TrainDecoderConfig) as a loader config."""

import json

import pytest
import torch
from torch import nn

from dalle2_pytorch.clip.adapters import OpenAIClipAdapter
from dalle2_pytorch.compat.train_config import reference_clip_adapter
from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior

from tests.compat.legacy_fixtures import legacy_case, needs_legacy

CLIP_SECTION = {"make": "openai", "model": "ViT-L/14"}


def _prior_training_config(meta: dict) -> dict:
    kw = meta["kwargs"]
    net = {**kw["net"], "norm_in": None}  # nulls meant "default" to the reference
    return {"prior": {"clip": CLIP_SECTION, "net": net, "image_embed_dim": kw["image_embed_dim"], "image_size": 224,
                      "image_channels": 3, "sample_timesteps": None, **kw["prior"]},
            "data": {"batch_size": 128}, "train": {"epochs": 5}, "tracker": {"log": {"log_type": "console"}}}


def _decoder_training_config(meta: dict) -> dict:
    kw = meta["kwargs"]
    return {"decoder": {"unets": [{**u, "init_cross_embed": None} for u in kw["unets"]], "clip": CLIP_SECTION,
                        "image_sizes": kw["image_sizes"], "sample_timesteps": None, **kw["decoder"]},
            "data": {"webdataset_base_url": "x"}, "train": {"epochs": 1}, "evaluate": {}, "tracker": {}}


@needs_legacy
@pytest.mark.parametrize("case", ["laion_prior_110", "laion_decoder_110"])
def test_a_training_config_file_loads_like_the_plain_kwargs(case, tmp_path):
    path, meta, _ = legacy_case(case)
    cls = DiffusionPrior if meta["kind"] == "prior" else Decoder
    config = _prior_training_config(meta) if meta["kind"] == "prior" else _decoder_training_config(meta)
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_config = cls.from_reference_checkpoint(path, tmp_path / "config.json")
    from_kwargs = cls.from_reference_checkpoint(path, meta["kwargs"])
    assert from_config.config.keys() == from_kwargs.config.keys()
    for key, value in from_kwargs.state_dict().items():
        assert torch.equal(from_config.state_dict()[key], value), key


class _TinyOpenAIClip(nn.Module):
    """Just the attributes OpenAIClipAdapter reads when it wraps a loaded model."""

    def __init__(self):
        super().__init__()
        self.visual = nn.Module()
        self.visual.output_dim = 16
        self.ln_final = nn.LayerNorm(8)
        self.positional_embedding = nn.Parameter(torch.zeros(77, 8))


def test_the_clip_section_maps_to_our_adapters():
    adapter = reference_clip_adapter(CLIP_SECTION, model=_TinyOpenAIClip())
    assert isinstance(adapter, OpenAIClipAdapter) and adapter.name == "ViT-L/14" and adapter.dim_latent == 16
    with pytest.raises(ValueError, match="clip make 'coca' has no adapter here"):
        reference_clip_adapter({"make": "coca", "base_model_kwargs": {}})
    with pytest.raises(TypeError, match="must be a dict"):
        reference_clip_adapter("OpenAIClipAdapter('ViT-L/14')")

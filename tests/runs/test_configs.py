"""Training configs: every example in configs/ validates, mistakes are errors that name the field, create() builds."""

import json
import re
from pathlib import Path

import pytest

from dalle2_pytorch.runs.config_base import ConfigError
from dalle2_pytorch.runs.configs import CONFIG_CLASSES, config_from_dict, describe_fields, load_train_config
from dalle2_pytorch.runs.demo import PRESETS, load_demo

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.json"))


def test_there_are_toy_single_gpu_and_multi_gpu_examples():
    names = {path.stem for path in CONFIGS}
    assert {"toy_decoder", "toy_clip", "toy_prior", "toy_vae", "decoder_single_gpu", "prior_multi_gpu",
            "decoder_multi_gpu"} <= names
    assert {Path(f).stem for f in PRESETS.values()} <= names  # the demo presets are config files


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_config_validates(path):
    if json.loads(path.read_text())["kind"] == "demo":
        demo, stages = load_demo(path)
        assert sorted(stages) == ["clip", "decoder", "prior"]
        return
    config = load_train_config(path)
    assert config.kind in CONFIG_CLASSES


@pytest.mark.parametrize("name", ["toy_decoder", "toy_clip", "toy_vae", "toy_prior", "toy_tiny_decoder",
                                  "decoder_single_gpu"])
def test_example_builds_its_model(name):
    """Built by the constructors (the CLIP a config names is left out: it does not exist before training)."""
    data = json.loads((CONFIGS[0].parent / f"{name}.json").read_text())
    if data["model"].get("clip"):
        data["model"]["clip"] = None
        if name == "toy_prior":
            data["model"]["image_embed_dim"] = data["model"]["net"]["dim"]
    if name == "decoder_single_gpu":  # full size is slow to build: shrink the widths, keep every other keyword
        for unet in data["model"]["unet"]:
            unet.update(dim=8, attn_dim_head=8, attn_heads=1, image_embed_dim=unet.get("image_embed_dim") and 8,
                        text_embed_dim=unet.get("text_embed_dim") and 8, cond_dim=unet.get("cond_dim") and 8)
    model = config_from_dict(data).model.create()
    assert sum(p.numel() for p in model.parameters()) > 0


def minimal(**changes):
    data = {"kind": "decoder", "model": {"unet": [{"dim": 16}], "image_sizes": [32], "unconditional": True},
            "data": {"source": "toy"}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    return data


@pytest.mark.parametrize("changes, expected", [
    ({"trainer__lr": "fast"}, "trainer.lr: Input should be a valid number"),
    ({"trainer__learning_rate": 1e-3}, "trainer.learning_rate: unknown field"),
    ({"model__colour": "red"}, "model.colour: unknown field"),
    ({"model__unets": [{"dim": 16}]}, "model.unets: unknown field (not allowed here); did you mean 'unet'?"),
    ({"model__use_dynamic_thresh": True}, "did you mean 'use_dynamic_thres'"),
    ({"data__batch_szie": 8}, "data.toy.batch_szie: unknown field (not allowed here); did you mean 'batch_size'"),
    ({"data__batch_size": 0}, "batch_size: Input should be greater than 0"),
    ({"tracker__wandb": {"project": "p", "mode": "sometimes"}}, "tracker.wandb.mode"),
    ({"checkpointing__best_mode": "up"}, "checkpointing.best_mode"),
])
def test_mistakes_name_the_field(changes, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config_from_dict(minimal(**changes))


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_train_config(broken)
    other = tmp_path / "clip.json"
    other.write_text(json.dumps({"kind": "clip"}))
    with pytest.raises(ConfigError, match="trains a 'decoder'"):
        load_train_config(other, kind="decoder")
    toml = tmp_path / "run.toml"
    toml.write_text('kind = "decoder"\n[model]\nimage_sizes = [32]\nunconditional = true\n'
                    '[[model.unet]]\ndim = 16\n[data]\nsource = "toy"\n')
    assert load_train_config(toml).model.unet[0].dim == 16


def test_mismatched_unets_and_sizes_is_the_constructors_error():
    config = config_from_dict(minimal(model__image_sizes=[16, 32]))
    with pytest.raises(ValueError, match=r"image_sizes=\(16, 32\) has 2 entries for 1 unets"):
        config.model.create()


def test_describe_lists_every_section():
    text = "\n".join(describe_fields(CONFIG_CLASSES["decoder"]))
    for section in ("model:", "data:", "trainer:", "evaluation:", "tracker:", "checkpointing:"):
        assert section in text


def test_a_demo_file_names_one_config_of_each_stage(tmp_path):
    root = CONFIGS[0].parent
    demo = json.loads((root / "toy_tiny_demo.json").read_text())
    for stage in ("clip", "prior", "decoder"):
        demo[stage] = str(root / demo[stage])
    wrong = tmp_path / "demo.json"
    wrong.write_text(json.dumps({**demo, "prior": demo["clip"]}))
    with pytest.raises(ConfigError, match="prior=.* is a 'clip' config, not a 'prior' one"):
        load_demo(wrong)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({**demo, "images_per_captoin": 2}))
    with pytest.raises(ConfigError, match="did you mean 'images_per_caption'"):
        load_demo(typo)

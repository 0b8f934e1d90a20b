"""Training configs: every example in configs/ validates, mistakes are errors that name the field, create() builds."""

import json
from pathlib import Path

import pytest

from dalle2_pytorch.train.config_base import ConfigError
from dalle2_pytorch.train.configs import CONFIG_CLASSES, config_from_dict, describe_fields, load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.json"))


def test_there_are_toy_single_gpu_and_multi_gpu_examples():
    names = {path.stem for path in CONFIGS}
    assert {"toy_decoder", "toy_clip", "toy_prior", "toy_vae", "decoder_single_gpu", "prior_multi_gpu",
            "decoder_multi_gpu"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_config_validates(path):
    config = load_train_config(path)
    assert config.kind in CONFIG_CLASSES


@pytest.mark.parametrize("name", ["toy_decoder", "toy_clip", "toy_vae"])
def test_toy_example_builds_its_model(name):
    config = load_train_config(Path(CONFIGS[0]).parent / f"{name}.json")
    assert sum(p.numel() for p in config.model.create().parameters()) > 0


def minimal(**changes):
    data = {"kind": "decoder", "model": {"unets": [{"dim": 16}], "image_sizes": [32], "unconditional": True},
            "data": {"source": "toy"}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    return data


@pytest.mark.parametrize("changes, expected", [
    ({"trainer__lr": "fast"}, "trainer.lr: Input should be a valid number"),
    ({"trainer__learning_rate": 1e-3}, "trainer.learning_rate: unknown field"),
    ({"model__colour": "red"}, "model.colour: unknown field"),
    ({"data__batch_size": 0}, "batch_size: Input should be greater than 0"),
    ({"tracker__wandb": {"project": "p", "mode": "sometimes"}}, "tracker.wandb.mode"),
    ({"checkpointing__best_mode": "up"}, "checkpointing.best_mode"),
])
def test_mistakes_name_the_field(changes, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
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
                    '[[model.unets]]\ndim = 16\n[data]\nsource = "toy"\n')
    assert load_train_config(toml).model.unets[0].dim == 16


def test_mismatched_unets_and_sizes_is_a_clear_error():
    config = config_from_dict(minimal(model__image_sizes=[16, 32]))
    with pytest.raises(ValueError, match="image_sizes has 2 entries but model.unets has 1"):
        config.model.create()


def test_describe_lists_every_section():
    text = "\n".join(describe_fields(CONFIG_CLASSES["decoder"]))
    for section in ("model:", "data:", "trainer:", "evaluation:", "tracker:", "checkpointing:"):
        assert section in text

"""`dalle2 config validate` makes every check `train` would make before its first step, naming the config path of
each problem; `train` makes the same checks first (and trains nothing when one fails)."""

from __future__ import annotations

import copy
import json

import pytest

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.preflight import preflight

UNET = {"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1, "attn_dim_head": 8}
BASE = {
    "kind": "decoder",
    "model": {"unconditional": True, "unet": [dict(UNET), dict(UNET)], "image_sizes": [8, 16], "timesteps": 50,
              "learned_variance": False},
    "data": {"source": "toy", "num_samples": 32, "image_size": 16, "batch_size": 8},
    "trainer": {"max_steps": 1},
    "evaluation": {"validate_every": 0, "sample_every": 0, "sampler": "ddim", "sample_steps": 4},
    "tracker": {"console": False, "jsonl": False},
    "checkpointing": {"directory": "RUN", "save_every": 100},
}


def mutate(changes: dict) -> dict:
    config = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return config


# the five the issue found `validate` calling valid while `train` failed, and two more it found
CASES = {
    "negative unet dim": ({"model.unet.1.dim": -16}, "model.unet.1.dim"),
    "negative timesteps": ({"model.timesteps": -5}, "model.timesteps"),
    "image_sizes count differs from unets": ({"model.image_sizes": [8, 16, 32]}, "model.image_sizes"),
    "sample_steps above timesteps": ({"evaluation.sample_steps": 100}, "evaluation.sample_steps"),
    "data smaller than the last unet": ({"data.image_size": 8}, "data.image_size"),
    "misspelt best_metric": ({"checkpointing.best_metric": "val_los"}, "did you mean 'val_loss'"),
    "unknown sampler": ({"evaluation.sampler": "dddim"}, "evaluation.sampler"),
    "missing image folder": ({"data": {"source": "image_folder", "path": "NOWHERE", "image_size": 16}}, "data.path"),
    "per-unet list of the wrong length": ({"evaluation.cond_scale": [1.0, 1.0, 1.0]}, "evaluation.cond_scale"),
    "unet_numbers beyond the cascade": ({"trainer.unet_numbers": [3]}, "trainer.unet_numbers"),
}


def write(tmp_path, config) -> str:
    config = json.loads(json.dumps(config).replace("RUN", str(tmp_path / "run")).replace("NOWHERE",
                                                                                         str(tmp_path / "none")))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_the_base_config_is_valid_and_trains(tmp_path, capsys):
    path = write(tmp_path, BASE)
    assert main(["config", "validate", path]) == 0
    assert "valid decoder config" in capsys.readouterr().out
    assert main(["train", "decoder", "--config", path]) == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_names_the_config_path_and_train_refuses_before_training(name, tmp_path, capsys):
    changes, expected = CASES[name]
    path = write(tmp_path, mutate(changes))
    assert main(["config", "validate", path]) == 2
    err = capsys.readouterr().err
    assert expected in err and path in err and "Traceback" not in err, err
    assert main(["train", "decoder", "--config", path]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was trained or saved


def test_every_problem_is_listed_at_once():
    config = config_from_dict(mutate({"model.unet.0.dim": -1, "model.unet.1.dim": 0, "evaluation.sampler": "x"}))
    errors = preflight(config).errors
    assert [e.split(":")[0] for e in errors] == ["model.unet.0.dim", "model.unet.1.dim", "evaluation.sampler"]


def test_a_checkpoint_another_run_writes_is_a_note_for_validate_and_an_error_for_train(tmp_path, capsys):
    config = mutate({"model.vae": [None, str(tmp_path / "vae")]})
    path = write(tmp_path, config)
    assert main(["config", "validate", path]) == 0
    assert "note: model.vae.1" in capsys.readouterr().out
    assert main(["train", "decoder", "--config", path]) == 2
    assert "model.vae.1" in capsys.readouterr().err


def test_best_metric_names_come_from_what_each_kind_evaluates():
    from dalle2_pytorch.runs.preflight import Findings, build_empty_model
    from dalle2_pytorch.runs.tasks import build_task

    conditional = config_from_dict(mutate({"model.unconditional": False, "model.unet.0.image_embed_dim": 8,
                                           "model.unet.1.image_embed_dim": 8}))
    model = build_empty_model(conditional, Findings())
    assert next(model.parameters()).is_meta  # nothing allocated
    assert build_task(conditional, model).evaluated_metrics(model) == {"val_loss", "faithfulness"}
    assert not preflight(config_from_dict(mutate({"checkpointing.best_metric": "faithfulness", "model.unconditional":
                                                  False, "model.unet.0.image_embed_dim": 8,
                                                  "model.unet.1.image_embed_dim": 8}))).errors

"""A table of bad invocations of `dalle2`, each run in this process: every mistake a user can make is one line that
names the file or field and says what to do, with exit status 2 and no traceback; `--debug` shows the traceback;
a bug of ours (an AssertionError) shows its traceback and says it is a bug."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from dalle2_pytorch.cli.main import main
from tests.serve.tiny_model import save_tiny_checkpoint


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def pipeline(tmp: Path) -> Path:
    return save_tiny_checkpoint(tmp / "pipe")


def prior_config(tmp: Path, *, dim: int = 8, depth: int = 1, embeddings: Path | None = None,
                 steps: int = 2) -> Path:
    """A prior run on clip-retrieval embeddings that trains in a second (written to tmp/prior.json)."""
    if embeddings is None:
        embeddings = tmp / "emb"
        rng = np.random.default_rng(0)
        for name in ("img_emb", "text_emb"):
            (embeddings / name).mkdir(parents=True, exist_ok=True)
            np.save(embeddings / name / f"{name}_0.npy", rng.normal(size=(64, 8)).astype(np.float32))
    config = {
        "kind": "prior",
        "model": {"net": {"dim": dim, "depth": depth, "dim_head": 8, "heads": 2, "max_text_len": 4},
                  "image_embed_dim": dim, "timesteps": 20, "sample_timesteps": 4,
                  "condition_on_text_encodings": False},
        "data": {"source": "clip_retrieval", "path": str(embeddings), "splits": {"train": 0.75, "val": 0.25},
                 "batch_size": 16},
        "trainer": {"epochs": 1, "max_steps": steps},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "sample_steps": 4},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(tmp / "run"), "save_every": 100},
    }
    path = tmp / "prior.json"
    path.write_text(json.dumps(config))
    return path


def trained_prior(tmp: Path) -> Path:
    config = prior_config(tmp)
    assert main(["train", "prior", "--config", str(config)]) == 0
    return config


# ----------------------------------------------------------------------------- the cases
def truncated_weights_sample(tmp):
    truncate(pipeline(tmp) / "decoder" / "model.safetensors")
    return ["sample", "a red circle", "--checkpoint", tmp / "pipe", "--out", tmp / "out"], \
        ["decoder/model.safetensors", "truncated or corrupt"]


def garbage_weights_eval(tmp):
    (pipeline(tmp) / "prior" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    return ["eval", "--checkpoint", tmp / "pipe"], ["prior/model.safetensors"]


def truncated_config_json(tmp):
    truncate(pipeline(tmp) / "prior" / "config.json")
    return ["sample", "a red circle", "--checkpoint", tmp / "pipe"], ["prior/config.json", "not valid JSON"]


def truncated_weights_serve(tmp):
    truncate(pipeline(tmp) / "decoder" / "model.safetensors", 0.9)
    return ["serve", "--checkpoint", tmp / "pipe", "--port", "0"], ["decoder/model.safetensors"]


def truncated_clip_embed(tmp):
    from tests.serve.tiny_model import tiny_dalle2

    clip = tiny_dalle2().decoder.clip.clip
    clip.save_pretrained(tmp / "clip")
    truncate(tmp / "clip" / "model.safetensors")
    return ["embed", str(tmp / "{0000..0001}.tar"), "--clip", tmp / "clip", "--out", tmp / "emb"], \
        ["clip/model.safetensors"]


def bad_trainer_file_on_resume(tmp):
    config = trained_prior(tmp)
    truncate(tmp / "run" / "latest" / "trainer.safetensors")
    return ["train", "prior", "--config", config, "--resume"], ["latest/trainer.safetensors", "start the run again"]


def changed_model_on_resume(tmp):
    trained_prior(tmp)
    config = prior_config(tmp, depth=2, embeddings=tmp / "emb")  # same embedding width, another network
    return ["train", "prior", "--config", config, "--resume"], ["latest", "model.net.depth"]


def disk_full_while_saving(tmp, monkeypatch):
    from safetensors import SafetensorError

    import dalle2_pytorch.serialization as serialization

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(serialization, "save_file", full)
    return ["train", "prior", "--config", prior_config(tmp)], ["model.safetensors", "no space left", "free some space"]


def nothing_decodes(tmp):
    folder = tmp / "pictures"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.png").write_bytes(b"not a png at all")
    return ["train", "decoder", "--images", folder, "--image-size", "16", "--steps", "1", "--out", tmp / "run"], \
        ["pictures", "could be read"]


def object_embeddings(tmp):
    emb = tmp / "emb"
    for name in ("img_emb", "text_emb"):
        (emb / name).mkdir(parents=True)
        np.save(emb / name / f"{name}_0.npy", np.array([{"not": "numbers"}] * 64, dtype=object), allow_pickle=True)
    return ["train", "prior", "--config", prior_config(tmp, embeddings=emb)], ["img_emb_0.npy"]


def string_embeddings(tmp):
    emb = tmp / "emb"
    for name in ("img_emb", "text_emb"):
        (emb / name).mkdir(parents=True)
        np.save(emb / name / f"{name}_0.npy", np.array([["x"] * 8] * 64))
    return ["train", "prior", "--config", prior_config(tmp, embeddings=emb)], ["img_emb_0.npy", "numbers"]


def truncated_embeddings(tmp):
    emb = tmp / "emb"
    for name in ("img_emb", "text_emb"):
        (emb / name).mkdir(parents=True)
        np.save(emb / name / f"{name}_0.npy", np.zeros((64, 8), dtype=np.float32))
    truncate(emb / "img_emb" / "img_emb_0.npy", 0.3)
    return ["train", "prior", "--config", prior_config(tmp, embeddings=emb)], ["img_emb_0.npy"]


def missing_serve_extra(tmp, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fastapi", None)
    return ["serve", "--checkpoint", pipeline(tmp)], ["pip install 'unclip-pytorch[serve]'"]


def corrupt_training_state(tmp):
    config = trained_prior(tmp)
    (tmp / "run" / "latest" / "training_state.json").write_text("{\"counters\": ")
    return ["train", "prior", "--config", config, "--resume"], ["training_state.json"]


def seed_out_of_range(tmp):
    return ["sample", "a red circle", "--checkpoint", pipeline(tmp), "--seed", str(2 ** 70)], \
        ["--seed", "2**64 - 1"]


def broken_config_file(tmp):
    (tmp / "run.json").write_text('{"kind": "prior", "model": ')
    return ["config", "validate", tmp / "run.json"], ["run.json", "not valid JSON"]


CASES: dict[str, Callable] = {f.__name__: f for f in (
    truncated_weights_sample, garbage_weights_eval, truncated_config_json, truncated_weights_serve,
    truncated_clip_embed, bad_trainer_file_on_resume, changed_model_on_resume, disk_full_while_saving,
    nothing_decodes, object_embeddings, string_embeddings, truncated_embeddings, missing_serve_extra,
    corrupt_training_state, seed_out_of_range, broken_config_file)}


def run_case(name, tmp_path, monkeypatch, capsys, *flags):
    case = CASES[name]
    needs_patch = "monkeypatch" in case.__code__.co_varnames[:case.__code__.co_argcount]
    argv, expected = case(tmp_path, monkeypatch) if needs_patch else case(tmp_path)
    capsys.readouterr()
    status = main([*flags, *map(str, argv)])
    return status, capsys.readouterr().err, expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_user_mistake_is_one_line_naming_the_file(name, tmp_path, monkeypatch, capsys):
    status, err, expected = run_case(name, tmp_path, monkeypatch, capsys)
    assert "Traceback" not in err, err[-3000:]
    # a progress bar may precede it on stderr (tqdm ends no line); the error is one line after it, the last
    assert status == 2 and err.count("error: ") == 1, err[-3000:]
    line = err[err.index("error: "):]
    assert line.count("\n") == 1 and line.endswith("\n"), err[-3000:]
    for part in expected:
        assert part.lower() in line.lower(), (part, line)
    assert "weights_only=False" not in line


def test_debug_shows_the_traceback_of_a_user_mistake(tmp_path, monkeypatch, capsys):
    status, err, _ = run_case("truncated_weights_sample", tmp_path, monkeypatch, capsys, "--debug")
    assert status == 2 and "Traceback" in err and "decoder/model.safetensors" in err


def test_dream_reports_like_dalle2(tmp_path, capsys):
    from dalle2_pytorch.cli.main import dream

    truncate(pipeline(tmp_path) / "prior" / "model.safetensors")
    assert dream(["a red circle", "--checkpoint", str(tmp_path / "pipe")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "prior/model.safetensors" in err and "Traceback" not in err


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(tmp_path, monkeypatch, capsys):
    from dalle2_pytorch.cli import commands

    def broken(args):
        assert False, "an internal invariant"

    monkeypatch.setattr(commands, "config_show", broken)
    monkeypatch.setattr("dalle2_pytorch.cli.main.commands", commands)
    status = main(["config", "show", "--kind", "prior"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" in err and "AssertionError: an internal invariant" in err
    assert "bug in dalle2_pytorch" in err and "please report" in err

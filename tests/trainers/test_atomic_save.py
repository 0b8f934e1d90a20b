"""Saves are atomic: a save that fails before it is complete (here: the disk refuses to flush) leaves the previous
file exactly as it was and no temporary file behind."""

import os

import pytest
import torch

from dalle2_pytorch.serialization import load_tensors, save_json, load_json, save_tensors
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from tests.trainers.helpers import batch, tiny_decoder


class DiskFull(OSError):
    pass


def refuse_to_flush(monkeypatch):
    def fsync(fd):
        raise DiskFull("no space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def test_failed_tensor_and_json_saves_keep_the_previous_files(tmp_path, monkeypatch):
    path = tmp_path / "weights.safetensors"
    save_tensors({"w": torch.zeros(3)}, path)
    save_json({"step": 1}, tmp_path / "meta.json")
    refuse_to_flush(monkeypatch)
    with pytest.raises(DiskFull):
        save_tensors({"w": torch.ones(3)}, path)
    with pytest.raises(DiskFull):
        save_json({"step": 2}, tmp_path / "meta.json")
    monkeypatch.undo()
    assert torch.equal(load_tensors(path)["w"], torch.zeros(3))
    assert load_json(tmp_path / "meta.json") == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "weights.safetensors"]


def test_failed_trainer_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = DecoderTrainer(tiny_decoder(1), lr=1e-2, ema_update_after_step=0, ema_update_every=1)
    images, embeds = batch(2, 8)
    trainer(images, image_embed=embeds)
    trainer.update()
    path = trainer.save(tmp_path / "decoder.safetensors")
    saved = {k: v.clone() for k, v in trainer.decoder.state_dict().items()}
    trainer(images, image_embed=embeds)
    trainer.update()
    refuse_to_flush(monkeypatch)
    with pytest.raises(DiskFull):
        trainer.save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    fresh = DecoderTrainer(tiny_decoder(1, seed=1), lr=1e-2)
    fresh.load(path)
    assert fresh.num_steps_taken(1) == 1
    for name, value in fresh.decoder.state_dict().items():
        assert torch.equal(value, saved[name]), name

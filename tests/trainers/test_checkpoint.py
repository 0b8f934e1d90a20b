"""Training checkpoints: round trip, exact resume in a fresh process, a kill during save, bad files."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dalle2_pytorch.trainers.checkpoint import load_checkpoint, read_counters, rebuild_model, save_checkpoint
from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
from tests.trainers.checkpoint_worker import make_trainers
from tests.trainers.helpers import batch, tiny_decoder

ROOT = Path(__file__).resolve().parents[2]


def run_worker(mode: str, folder: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "tests.trainers.checkpoint_worker", mode, str(folder)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_exact_resume_in_a_fresh_process(tmp_path):
    finish(run_worker("full", tmp_path))
    finish(run_worker("resume", tmp_path))
    full, resumed = load_file(tmp_path / "full.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert set(full) == set(resumed)
    different = [k for k in full if not k.startswith(("decoder.rng.", "prior.rng.")) and not torch.equal(full[k], resumed[k])]
    assert not different, different[:10]
    assert torch.equal(full["decoder.rng.torch"], resumed["decoder.rng.torch"])
    assert any(k.startswith("decoder.ema.unet2.") for k in full) and any(k.startswith("prior.optim.") for k in full)


@pytest.mark.slow
def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    process = run_worker("kill", tmp_path)
    try:
        for expected in ("SAVED", "IN_SAVE"):
            line = process.stdout.readline().strip()
            assert line == expected, (line, process.stderr.read() if process.poll() is not None else "")
        assert list(tmp_path.glob(".decoder.safetensors.*.tmp")), "the new checkpoint should be half-way"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    decoder, _ = make_trainers()
    decoder.load(tmp_path / "decoder.safetensors")
    assert decoder.num_steps_taken(1) == 1 and decoder.num_steps_taken(2) == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode, leftover", [("kill_folder_write", ".latest.partial"), ("kill_folder_swap", ".latest.old")])
def test_kill_during_a_folder_save_leaves_the_previous_checkpoint_folder(tmp_path, mode, leftover):
    """Killed while writing the new folder, or between moving the old one aside and renaming the new one in: the
    readers find the previous checkpoint (the second case by renaming ``.latest.old`` back)."""
    process = run_worker(mode, tmp_path)
    try:
        for expected in ("SAVED", "IN_SAVE"):
            line = process.stdout.readline().strip()
            assert line == expected, (line, process.stderr.read() if process.poll() is not None else "")
        assert (tmp_path / leftover).is_dir()
        assert (tmp_path / "latest").exists() == (mode == "kill_folder_write")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert read_counters(tmp_path / "latest") == {"step": 1}
    decoder, _ = make_trainers()
    assert load_checkpoint(tmp_path / "latest", decoder) == {"step": 1}
    assert decoder.num_steps_taken(1) == 1 and decoder.num_steps_taken(2) == 1
    assert not (tmp_path / ".latest.old").exists()
    # the next save starts afresh over whatever the killed one left
    save_checkpoint(tmp_path / "latest", decoder, {"step": 3})
    assert read_counters(tmp_path / "latest") == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".latest")) == []


def test_round_trip_restores_everything(tmp_path):
    trainer = DecoderTrainer(tiny_decoder(1), ema_update_after_step=0, ema_update_every=1)
    images, embeds = batch(2, 8)
    for _ in range(2):
        trainer(images, image_embed=embeds)
        trainer.update()
    path = trainer.save(tmp_path / "ckpt.safetensors")
    state, meta = trainer.training_state()
    fresh = DecoderTrainer(tiny_decoder(1, seed=5), ema_update_after_step=0, ema_update_every=1)
    fresh.load(path)
    fresh_state, fresh_meta = fresh.training_state()
    assert fresh.num_steps_taken() == 2 and fresh_meta["parts"] == meta["parts"]
    assert all(torch.equal(state[k], fresh_state[k]) for k in state if not k.startswith("rng."))
    rebuilt = rebuild_model(path, use_ema=True)
    ema_unet = trainer.ema_unet(1)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.get_unet(1).parameters(), ema_unet.parameters()))
    model_only = DecoderTrainer(tiny_decoder(1, seed=7), use_ema=False)
    model_only.load(path, only_model=True)
    assert model_only.num_steps_taken() == 0


def test_wrong_kind_or_version_is_a_clear_error(tmp_path):
    decoder, prior = make_trainers()
    path = prior.save(tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="DiffusionPriorTrainer checkpoint"):
        decoder.load(path)
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    header = json.loads(metadata["dalle2_pytorch_training_state"])
    header["format_version"] = 99
    save_file(tensors, str(tmp_path / "future.safetensors"),
              metadata={"dalle2_pytorch_training_state": json.dumps(header)})
    with pytest.raises(ValueError, match="format_version 99"):
        prior.load(tmp_path / "future.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a dalle2_pytorch training checkpoint"):
        prior.load(tmp_path / "plain.safetensors")


def test_legacy_pt_files_load_without_pickle(tmp_path):
    trainer = DecoderTrainer(tiny_decoder(1), use_ema=False)
    torch.save({"model": {k: v.clone() for k, v in trainer.decoder.state_dict().items()}}, tmp_path / "weights.pt")
    fresh = DecoderTrainer(tiny_decoder(1, seed=3), use_ema=False)
    fresh.load(tmp_path / "weights.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.decoder.parameters(), trainer.decoder.parameters()))
    torch.save({"model": {"x": object()}}, tmp_path / "evil.pt")
    from dalle2_pytorch.errors import UnsafeFileError

    with pytest.raises(UnsafeFileError, match="evil.pt: .*not unpickled for safety"):  # names the file, runs nothing
        trainer.load(tmp_path / "evil.pt")


def test_bf16_autocast_path_runs_on_cpu():
    trainer = DecoderTrainer(tiny_decoder(1), mixed_precision="bf16", use_ema=False)
    seen = []
    convs = [m for m in trainer.decoder.get_unet(1).modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in convs]
    images, embeds = batch(2, 8)
    loss = trainer(images, image_embed=embeds, max_batch_size=1)
    trainer.update()
    for handle in handles:
        handle.remove()
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)
    assert loss == loss and trainer.num_steps_taken() == 1
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.decoder.parameters())


def test_fp16_uses_a_grad_scaler_that_is_checkpointed(tmp_path):
    trainer = DecoderTrainer(tiny_decoder(1), mixed_precision="fp16", use_ema=False)
    images, embeds = batch(2, 8)
    trainer(images, image_embed=embeds)
    trainer.update()
    part = trainer.parts["unet1"]
    assert part.scaler is not None and part.step + part.overflow_steps == 1
    trainer.save(tmp_path / "fp16.safetensors")
    fresh = DecoderTrainer(tiny_decoder(1), mixed_precision="fp16", use_ema=False)
    fresh.load(tmp_path / "fp16.safetensors")
    assert fresh.parts["unet1"].scaler.get_scale() == part.scaler.get_scale()

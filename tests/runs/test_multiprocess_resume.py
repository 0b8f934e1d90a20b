"""Resume under two processes (torchrun, gloo) is bit-exact for runs whose loss draws noise and timesteps: each rank
gets its own random stream back, the data continues where it stopped, and the metrics log marks the resume and holds
every step once, with the very losses of an uninterrupted run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from .distributed import logged, train_two_processes
from .test_resume import tiny_decoder_config, tiny_prior_config

pytestmark = pytest.mark.slow

STEPS, KILL_AT, SAVE_EVERY = 12, 6, 4   # 32 training samples / (4 x 2 ranks) = 4 steps an epoch; killed mid-epoch 1


def two_process_config(make_config, directory) -> dict:
    config = make_config(directory).model_dump(mode="json")
    config["trainer"].update(max_steps=STEPS, epochs=10)
    config["tracker"].update(log_every=1, jsonl=True, console=False)
    config["checkpointing"].update(save_every=SAVE_EVERY)
    return config


def check_two_process_resume(make_config, kind, tmp_path):
    straight = train_two_processes(tmp_path / "a", kind, two_process_config(make_config, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    interrupted = two_process_config(make_config, tmp_path / "interrupted")
    killed = train_two_processes(tmp_path / "b", kind, interrupted, kill_at=KILL_AT)
    assert killed.returncode != 0
    before = [json.loads((tmp_path / "b" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert json.loads((tmp_path / "interrupted" / "latest" / "training_state.json").read_text())["counters"]["step"] \
        == SAVE_EVERY
    assert max(e["step"] for e in logged(tmp_path / "interrupted")) == KILL_AT  # steps 5 and 6 to be run again
    resumed = train_two_processes(tmp_path / "c", kind, interrupted, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == STEPS

    # the same samples on each rank, the checkpoint's steps first, then the rest
    after = [json.loads((tmp_path / "c" / f"rank{r}.json").read_text()) for r in (0, 1)]
    whole = [json.loads((tmp_path / "a" / f"rank{r}.json").read_text()) for r in (0, 1)]
    per_step = len(whole[0]) // STEPS
    for rank in (0, 1):
        assert before[rank][:SAVE_EVERY * per_step] + after[rank] == whole[rank]

    # every tensor of the final training state (weights, EMA, optimisers, each rank's RNG state) is identical
    final = [load_file(str(tmp_path / run / "latest" / "trainer.safetensors")) for run in ("straight", "interrupted")]
    assert final[0].keys() == final[1].keys() and any(k.startswith("rng.rank1.") for k in final[0])
    differing = [k for k in final[0] if not torch.equal(final[0][k], final[1][k])]
    assert differing == [], f"{len(differing)} of {len(final[0])} tensors differ, e.g. {differing[:5]}"
    assert not torch.equal(final[0]["rng.torch"], final[0]["rng.rank1.torch"])  # the ranks drew different noise

    # the log: one resume marker, each step once, and every logged value as in the uninterrupted run
    reference = {e["step"]: e for e in logged(tmp_path / "straight") if "loss" in e}
    entries = logged(tmp_path / "interrupted")
    markers = [e for e in entries if e.get("event") == "resume"]
    assert len(markers) == 1 and markers[0]["step"] == SAVE_EVERY
    losses = [e for e in entries if "loss" in e]
    assert [e["step"] for e in losses] == list(range(1, STEPS + 1)) == sorted(reference)
    for entry in losses:
        expected = {k: v for k, v in reference[entry["step"]].items() if k != "time"}
        assert {k: v for k, v in entry.items() if k != "time"} == expected, f"step {entry['step']}"


def test_two_process_decoder_resume_is_bit_exact(tmp_path):
    check_two_process_resume(tiny_decoder_config, "decoder", tmp_path)


def test_two_process_prior_resume_is_bit_exact(tmp_path):
    from dalle2_pytorch.clip.model import CLIP

    torch.manual_seed(0)
    CLIP(dim_text=16, dim_image=16, dim_latent=8, num_text_tokens=49408, text_seq_len=8, text_enc_depth=1,
         text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8, visual_image_size=16,
         visual_patch_size=8, visual_patch_dropout=0.0).save_pretrained(tmp_path / "clip")
    check_two_process_resume(lambda directory: tiny_prior_config(directory, tmp_path / "clip"), "prior", tmp_path)

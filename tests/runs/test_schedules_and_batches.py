"""What the toy demo needs from the config-driven loop, as config fields: caption-balanced batches, a cosine lr
decay over the run, and decoder unets trained one after another with a schedule each."""

import json

import pytest
import torch

from dalle2_pytorch.runs.config_sections import ToyData
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.data_sources import RenderedToy, build_source
from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.runs.tasks import DecoderTask, build_task


def test_per_caption_batches_hold_each_caption_equally_often_and_resume_exactly():
    config = ToyData(num_samples=300, image_size=8, batch_size=36, batches="per_caption", seed=3)
    source = build_source(config)
    captions = RenderedToy(config).captions
    batches = list(source.epoch_batches(0))
    assert len(batches) == source.num_batches() == (300 - 15) // 36
    for batch in batches:
        assert batch["captions"] == [captions[i] for i in batch["index"].tolist()]
        counts = {c: batch["captions"].count(c) for c in batch["captions"]}
        assert len(counts) == 18 and set(counts.values()) == {2}
    assert not set(batches[0]["index"].tolist()) & set(source.val_indices.tolist())
    skipped = [b["index"].tolist() for b in source.epoch_batches(0, skip=3)]
    assert skipped == [b["index"].tolist() for b in batches[3:]]
    other = [b["index"].tolist() for b in source.epoch_batches(1)]
    assert other != [b["index"].tolist() for b in batches]


def test_per_caption_batches_need_a_multiple_of_the_captions():
    with pytest.raises(ValueError, match="batch_size=20 must be a multiple of the 18 distinct captions"):
        build_source(ToyData(num_samples=300, image_size=8, batch_size=20, batches="per_caption"))


def decoder_data(**trainer):
    return {
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1,
                            "attn_dim_head": 8}] * 2,
                  "image_sizes": [8, 16], "timesteps": 20, "unconditional": True, "learned_variance": False},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "batch_size": 4},
        "trainer": {"epochs": 100, "lr": 1e-3, **trainer},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1},
        "tracker": {"console": False, "log_every": 1},
    }


def test_unets_train_one_after_another_each_with_its_own_schedule(tmp_path):
    data = decoder_data(unet_steps=[3, 2], warmup_steps=[2, 1], cosine_decay=True)
    data["checkpointing"] = {"directory": str(tmp_path / "run"), "save_every": 100}
    config = config_from_dict(data)
    task = build_task(config, config.model.create())
    assert isinstance(task, DecoderTask) and task.total_steps() == 5
    assert [task.unet_for_step(s) for s in range(5)] == [1, 1, 1, 2, 2]
    assert task.schedule(None) == {"warmup_steps": (2, 1), "cosine_decay_max_steps": (3, 2)}
    summary = TrainingRun(config, show_progress=False).run()
    assert summary["step"] == 5
    logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    trained = [int(key[len("loss/unet"):]) for entry in logged for key in entry if key.startswith("loss/unet")]
    assert trained == [1, 1, 1, 2, 2]  # each step's loss under its unet's key
    lrs = [entry["lr"] for entry in logged if "lr" in entry]  # unet 1's optimiser is the one logged
    assert lrs[0] < lrs[1] and lrs[2] < lrs[1]  # warming up over 2 steps, then decaying over unet 1's 3


def test_unets_taking_turns_decay_over_their_share_and_bad_lists_are_errors():
    config = config_from_dict(decoder_data(max_steps=10, cosine_decay=True))
    task = build_task(config, config.model.create())
    assert task.schedule(10) == {"warmup_steps": (None, None), "cosine_decay_max_steps": (5, 5)}  # a share each
    bad = config_from_dict(decoder_data(unet_steps=[3]))
    with pytest.raises(ValueError, match=r"trainer.unet_steps=\[3\]: give a positive step count for each unet"):
        build_task(bad, bad.model.create())


def test_cosine_decay_spans_the_run_and_a_per_unet_list_is_for_decoders():
    clip = {"kind": "clip", "data": {"source": "toy", "num_samples": 40, "image_size": 16, "batch_size": 4},
            "model": {"dim_text": 8, "dim_image": 8, "dim_latent": 8, "num_text_tokens": 49408, "text_seq_len": 8,
                      "text_enc_depth": 1, "visual_enc_depth": 1, "visual_image_size": 16, "visual_patch_size": 8},
            "trainer": {"cosine_decay": True, "warmup_steps": 3}}
    config = config_from_dict(clip)
    task = build_task(config, None)
    assert task.schedule(40) == {"warmup_steps": 3, "cosine_decay_max_steps": 40}
    with pytest.raises(ValueError, match="needs a known run length"):
        task.schedule(None)
    listed = config_from_dict({**clip, "trainer": {"warmup_steps": [1, 2]}})
    with pytest.raises(ValueError, match="one per unet\\) is for decoders only"):
        build_task(listed, None).schedule(40)


def test_a_clip_vocabulary_smaller_than_the_tokenizer_is_a_clear_error(tmp_path):
    config = config_from_dict({
        "kind": "clip", "data": {"source": "toy", "num_samples": 40, "image_size": 16, "batch_size": 4},
        "model": {"dim_text": 8, "dim_image": 8, "dim_latent": 8, "text_seq_len": 8, "text_enc_depth": 1,
                  "visual_enc_depth": 1, "visual_image_size": 16, "visual_patch_size": 8},
        "checkpointing": {"directory": str(tmp_path / "run")}})
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="num_text_tokens=10000: .* set model.num_text_tokens to 49408"):
        TrainingRun(config, show_progress=False)

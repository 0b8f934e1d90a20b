"""Validation that works on any data: CLIP retrieval among the distinct captions of the validation split, best/
written at validation steps, and unet step weights for decoder training."""

import json

import torch

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.runs.tasks import ClipTask, build_task
from dalle2_pytorch.trainers.checkpoint import read_counters

CLIP_MODEL = {"dim_text": 16, "dim_image": 16, "dim_latent": 8, "num_text_tokens": 49408, "text_seq_len": 8,
              "text_enc_depth": 1, "text_heads": 2, "text_dim_head": 8, "visual_enc_depth": 1, "visual_heads": 2,
              "visual_dim_head": 8, "visual_image_size": 16, "visual_patch_size": 8}


class ReadsTheClassFromPixels:
    """A stand-in CLIP whose logits say caption i (of the sorted distinct ones) fits images whose pixel (0,0) is i/10."""

    text_seq_len = 8

    def __call__(self, tokens, images):
        classes = (images[:, 0, 0, 0] * 10).round().long()
        return (torch.arange(len(tokens))[:, None] == classes[None, :]).float()


def test_clip_zero_shot_metrics_use_the_distinct_captions_of_the_whole_split():
    names = ["a blue square", "a red circle", "a yellow star"]    # sorted, so caption i <-> class i
    classes = [0, 1, 2, 1, 1, 0, 2, 1]
    images = torch.zeros(8, 3, 4, 4)
    images[:, 0, 0, 0] = torch.tensor(classes) / 10
    batches = [{"images": images[:4], "captions": [names[c] for c in classes[:4]]},
               {"images": images[4:], "captions": [names[c] for c in classes[4:]]}]
    task = ClipTask(None)
    metrics = task.validation_metrics(ReadsTheClassFromPixels(), batches, torch.Generator())
    assert metrics["zero_shot_accuracy"] == 1.0 and metrics["caption_to_image_top1"] == 1.0
    batches[1]["captions"][0] = names[2]    # image 4 (class 1) now says "a yellow star": one miss in 8
    metrics = task.validation_metrics(ReadsTheClassFromPixels(), batches, torch.Generator())
    assert metrics["zero_shot_accuracy"] == 7 / 8


def test_best_is_saved_at_validation_steps_between_save_steps(tmp_path):
    config = config_from_dict({
        "kind": "clip", "model": CLIP_MODEL,
        "data": {"source": "toy", "num_samples": 144, "image_size": 16, "batch_size": 18, "batches": "per_caption",
                 "val_fraction": 0.125},
        "trainer": {"max_steps": 4, "epochs": 100, "lr": 1e-3},
        "evaluation": {"validate_every": 2, "validation_batches": 1, "sample_every": 0},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 1000, "best_metric": "val_loss"}})
    seen = {}
    run = TrainingRun(config, show_progress=False,
                      on_batch=lambda step, batch: seen.setdefault(step, read_counters(tmp_path / "run" / "best")))
    run.run()
    assert seen[0] is None and seen[2] is not None and seen[2]["step"] == 2   # best/ written at validation step 2
    logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("zero_shot_accuracy" in entry for entry in logged)


def test_repeated_unet_numbers_weight_the_unets(tmp_path):
    config = config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2]}, {"dim": 8, "dim_mults": [1, 2]}],
                  "image_sizes": [8, 16], "timesteps": 20, "unconditional": True},
        "data": {"source": "toy", "num_samples": 64, "image_size": 16, "batch_size": 4},
        "trainer": {"max_steps": 6, "epochs": 100, "unet_numbers": [1, 1, 2], "cosine_decay": True},
        "evaluation": {"validate_every": 0, "sample_every": 0}, "tracker": {"console": False, "log_every": 1},
        "checkpointing": {"directory": str(tmp_path / "run")}})
    run = TrainingRun(config, show_progress=False)
    assert [run.task.unet_for_step(step) for step in range(6)] == [1, 1, 2, 1, 1, 2]
    assert run.task.schedule(6)["cosine_decay_max_steps"] == (4, 2)     # each unet decays over its own steps
    run.run()
    logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    # each line (log_every 1) holds the loss of the unet that step trained, under loss/unet<n>
    trained = [int(key[len("loss/unet"):]) for entry in logged for key in entry if key.startswith("loss/unet")]
    assert trained == [1, 1, 2, 1, 1, 2]
    bad = config.model_copy(deep=True)
    bad.trainer.unet_steps = [3, 3]
    try:
        build_task(bad, bad.model.create())
    except ValueError as error:
        assert "use one of the two" in str(error)
    else:
        raise AssertionError("unet_numbers with repeats and unet_steps together must be refused")

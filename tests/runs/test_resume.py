"""Resume: a run killed mid-epoch continues from its latest checkpoint to the same final step, trains on the rest of
the interrupted epoch without repeating a sample, and ends with exactly the weights of an uninterrupted run."""

import pytest
import torch

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun


class Killed(Exception):
    pass


def tiny_clip_config(directory):
    return config_from_dict({
        "kind": "clip",
        "model": {"dim_text": 16, "dim_image": 16, "dim_latent": 8, "num_text_tokens": 49408, "text_seq_len": 8,
                  "text_enc_depth": 1,
                  "text_heads": 2, "text_dim_head": 8, "visual_enc_depth": 1, "visual_heads": 2,
                  "visual_dim_head": 8, "visual_image_size": 16, "visual_patch_size": 8,
                  "visual_patch_dropout": 0.0},
        "data": {"source": "toy", "num_samples": 80, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 2, "lr": 1e-3, "ema_beta": 0.9},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(directory), "save_every": 3},
    })


def run(config, *, resume=False, kill_at=None):
    seen = []

    def on_batch(step, batch):
        if step == kill_at:
            raise Killed
        seen.append((step, batch["index"].tolist()))

    training = TrainingRun(config, resume=resume, show_progress=False, on_batch=on_batch)
    try:
        summary = training.run()
    except Killed:
        summary = None
    return training, summary, seen


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_step_without_repeating_samples(tmp_path):
    config = tiny_clip_config(tmp_path / "interrupted")
    _, summary, seen_before = run(config, kill_at=11)  # 8 batches per epoch: killed at batch 3 of epoch 1
    assert summary is None
    resumed, summary, seen_after = run(config, resume=True)
    assert summary["step"] == 16 and summary["epoch"] == 2 and summary["samples_seen"] == 16 * 8

    checkpoint_step = 9  # saves every 3 steps: the latest before the kill holds steps 0..8
    assert seen_after[0][0] == checkpoint_step
    epoch_one = [i for step, batch in seen_before if 8 <= step < checkpoint_step for i in batch]
    epoch_one += [i for step, batch in seen_after for i in batch]
    assert len(epoch_one) == len(set(epoch_one)) == 64  # every training sample once, none twice

    reference, summary, seen_straight = run(tiny_clip_config(tmp_path / "straight"))
    assert summary["step"] == 16
    assert [b for s, b in seen_straight if s >= checkpoint_step] == [b for _, b in seen_after]
    for (name, a), b in zip(resumed.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs from the uninterrupted run"
    ema_states = [run.trainer.parts["model"].ema.state_dict() for run in (resumed, reference)]
    for (name, a), b in zip(ema_states[0].items(), ema_states[1].values()):
        assert torch.equal(a, b), f"EMA {name} differs from the uninterrupted run"


def test_resume_without_checkpoint_and_restart_over_checkpoint_are_errors(tmp_path):
    config = tiny_clip_config(tmp_path / "run")
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        TrainingRun(config, resume=True, show_progress=False)
    run(config, kill_at=4)
    with pytest.raises(ValueError, match="pass --resume"):
        TrainingRun(config, show_progress=False)


def test_a_save_killed_between_its_renames_keeps_the_previous_checkpoint(tmp_path):
    config = tiny_clip_config(tmp_path / "run")
    run(config, kill_at=4)  # latest holds step 3
    latest = tmp_path / "run" / "latest"
    latest.rename(tmp_path / "run" / ".latest.old")  # as if killed after moving the old one aside
    training = TrainingRun(config, resume=True, show_progress=False)
    assert training.counters["step"] == 3


# ----------------------------------------------------------------------------- resume with noise in the loss
# The CLIP above draws nothing from the random stream while training.  A diffusion model does at every step (timesteps,
# noise, condition dropout, the learned-variance term), so resuming it is exact only if the run's random stream after
# a resume continues exactly where the interrupted run left it, whatever the data loader does on the way.
def tiny_prior_config(directory, clip_path):
    return config_from_dict({
        "kind": "prior",
        "model": {"net": {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "max_text_len": 8},
                  "clip": {"kind": "builtin", "path": str(clip_path)}, "timesteps": 20, "sample_timesteps": 4,
                  "cond_drop_prob": 0.2, "condition_on_text_encodings": False},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "val_fraction": 0.2, "batch_size": 4},
        "trainer": {"epochs": 3, "max_steps": 20, "lr": 1e-3, "ema_beta": 0.9},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "sample_steps": 4},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(directory), "save_every": 5},
    })


def tiny_decoder_config(directory):
    return config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1,
                             "attn_dim_head": 8}],
                  "image_sizes": [8], "unconditional": True, "timesteps": 20, "learned_variance": True},
        "data": {"source": "toy", "num_samples": 40, "image_size": 8, "val_fraction": 0.2, "batch_size": 4},
        "trainer": {"epochs": 3, "max_steps": 20, "lr": 1e-3, "ema_beta": 0.9},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "num_samples": 2,
                       "sample_steps": 2},
        "tracker": {"console": False},
        "checkpointing": {"directory": str(directory), "save_every": 5},
    })


def assert_same_weights(resumed, reference):
    for (name, a), b in zip(resumed.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs from the uninterrupted run"
    for part, state in resumed.trainer.parts.items():
        if state.ema is None:
            continue
        ema_reference = reference.trainer.parts[part].ema.state_dict()
        for (name, a), b in zip(state.ema.state_dict().items(), ema_reference.values()):
            assert torch.equal(a, b), f"EMA {name} differs from the uninterrupted run"


def check_resume_is_exact(make_config, tmp_path):
    """20 uninterrupted steps == 10 steps, killed, resumed from the step-10 checkpoint for the other 10."""
    reference, summary, seen_straight = run(make_config(tmp_path / "straight"))
    assert summary["step"] == 20
    interrupted = make_config(tmp_path / "interrupted")
    _, summary, seen_before = run(interrupted, kill_at=10)   # 8 batches an epoch: killed at batch 2 of epoch 1
    assert summary is None
    resumed, summary, seen_after = run(interrupted, resume=True)
    assert summary["step"] == 20
    assert seen_before + seen_after == seen_straight      # the same batches, in the same order
    assert_same_weights(resumed, reference)
    untrained = TrainingRun(make_config(tmp_path / "untrained"), show_progress=False)
    for part, state in resumed.trainer.parts.items():     # the averages did follow the training
        start = untrained.trainer.parts[part].ema.ema_model.state_dict()
        moved = [not torch.equal(value, start[name]) for name, value in state.ema.ema_model.state_dict().items()]
        assert any(moved), f"the EMA of {part} never moved from the initial weights"


@pytest.mark.slow
def test_resumed_prior_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path):
    from dalle2_pytorch.clip.model import CLIP

    torch.manual_seed(0)
    clip = CLIP(dim_text=16, dim_image=16, dim_latent=8, num_text_tokens=49408, text_seq_len=8, text_enc_depth=1,
                text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8,
                visual_image_size=16, visual_patch_size=8, visual_patch_dropout=0.0)
    clip.save_pretrained(tmp_path / "clip")
    check_resume_is_exact(lambda directory: tiny_prior_config(directory, tmp_path / "clip"), tmp_path)


@pytest.mark.slow
def test_resumed_decoder_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path):
    check_resume_is_exact(tiny_decoder_config, tmp_path)

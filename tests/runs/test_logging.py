"""What a run logs: each unet's loss under its own key, the mean over the steps since the last line and over every
process, and W&B's mode taken from the environment when it says so."""

import json
from types import SimpleNamespace

import pytest
import torch

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import MetricWindow, TrainingRun, wandb_mode


def test_two_unets_logged_every_other_step_each_get_their_own_key(tmp_path):
    config = config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1,
                            "attn_dim_head": 8}] * 2,
                  "image_sizes": [8, 16], "timesteps": 20, "unconditional": True, "learned_variance": False},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "batch_size": 4},
        "trainer": {"epochs": 5, "max_steps": 6, "lr": 1e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1},
        "tracker": {"console": False, "log_every": 2},
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 100},
    })
    losses = []
    run = TrainingRun(config, show_progress=False)
    step = run.task.train_step
    run.task.train_step = lambda *args: losses.append(step(*args)) or losses[-1]
    run.run()
    logged = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    lines = [entry for entry in logged if "loss" in entry]
    assert [entry["step"] for entry in lines] == [2, 4, 6]
    for line, (first, second) in zip(lines, zip(losses[::2], losses[1::2])):  # unet 1 on even steps, 2 on odd
        assert line["loss/unet1"] == first["loss/unet1"] and line["loss/unet2"] == second["loss/unet2"]
        assert line["loss"] == pytest.approx((first["loss"] + second["loss"]) / 2)


class TwoRanks:
    """An accelerator stand-in whose other rank logged ``other`` (sums, then counts, keys sorted) since the last line."""

    num_processes, device = 2, torch.device("cpu")

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + self.other


def test_logged_losses_are_the_mean_over_steps_and_ranks():
    window = MetricWindow(TwoRanks(torch.tensor([[10.0, 5.0], [2.0, 1.0]], dtype=torch.float64)))
    window.add({"loss": 1.0, "loss/unet1": 1.0, "unet": True})
    window.add({"loss": 3.0})
    assert window.mean() == {"loss": (1.0 + 3.0 + 10.0) / 4, "loss/unet1": (1.0 + 5.0) / 2}
    single = MetricWindow(SimpleNamespace(num_processes=1, device=torch.device("cpu")))
    single.add({"loss": 2.0})
    assert single.mean() == {"loss": 2.0} and single.mean() == {}


def test_wandb_mode_from_the_environment_overrides_the_config(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("online") == "offline" and "overridden by WANDB_MODE='offline'" in capsys.readouterr().out
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode("online") == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'"):
        wandb_mode("online")

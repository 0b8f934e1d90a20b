"""Validation values: the loss is the mean over validation rows (a short last batch counts by its rows), and with
several processes each value is averaged over them weighted by the rows each used, the same floats on every process
(tests/runs/test_sharded_loop.py runs this with 2 processes under FSDP and DeepSpeed)."""

from types import SimpleNamespace

import pytest
import torch

from dalle2_pytorch.runs.agreement import agreed, mean_over_ranks
from dalle2_pytorch.runs.loop import TrainingRun
from .test_resume import tiny_decoder_config


def test_the_validation_loss_weights_each_batch_by_its_rows(tmp_path):
    config = tiny_decoder_config(tmp_path / "run")   # 40 toy samples, 8 held out, batches of 4
    config.data.val_fraction = 0.25                   # 10 held out: batches of 4, 4 and 2
    config.evaluation.validation_batches = 3
    training = TrainingRun(config, show_progress=False)
    sizes = []

    def loss(model, batch, index):
        sizes.append(len(batch["images"]))
        return torch.tensor(float(index))             # batch i's loss is i

    training.task.loss = loss
    result = training.evaluate()
    assert sizes == [4, 4, 2]
    assert result["val_loss"] == (0 * 4 + 1 * 4 + 2 * 2) / 10   # not (0 + 1 + 2) / 3


def test_values_are_averaged_over_processes_weighted_by_rows(monkeypatch):
    import accelerate.utils

    parts = [{"val_loss": (1.0, 8.0), "sample_cosine": (0.5, 8.0)}, {"val_loss": (4.0, 2.0)}]
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda local: parts)
    two = SimpleNamespace(num_processes=2)
    result = mean_over_ranks(parts[0], two)
    assert result == {"sample_cosine": 0.5, "val_loss": (1.0 * 8 + 4.0 * 2) / 10}   # a name one rank lacks: its own
    one = SimpleNamespace(num_processes=1)
    assert mean_over_ranks({"val_loss": (0.1, 3.0)}, one) == {"val_loss": 0.1}
    assert mean_over_ranks({}, one) == {}


def test_one_process_takes_every_batch_without_a_collective():
    batches = [{"x": torch.zeros(1)}, {"x": torch.ones(1)}]
    assert list(agreed(iter(batches), SimpleNamespace(num_processes=1))) == batches


@pytest.mark.parametrize("available, expected", [((3, 2), 2), ((0, 5), 0)])
def test_every_process_stops_when_the_shortest_runs_out(monkeypatch, available, expected):
    """Two processes simulated by an all_reduce that takes the minimum with the other rank's "still has one" flag."""
    import torch.distributed as dist

    mine, theirs = available
    calls = []

    def all_reduce(tensor, op):
        assert op == dist.ReduceOp.MIN
        tensor.clamp_(max=1 if len(calls) < theirs else 0)
        calls.append(int(tensor.item()))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    taken = list(agreed(iter(range(mine)), SimpleNamespace(num_processes=2, device=torch.device("cpu"))))
    assert taken == list(range(expected)) and len(calls) == expected + 1


def test_validation_steps_that_find_no_batch_are_said_once(tmp_path):
    """Validation asked for (validate_every) but no validation batch (here a 0 % held-out split): without a word there
    would be no val_loss and no best/; the run says so once, naming the setting."""
    config = tiny_decoder_config(tmp_path / "run")
    config.data.val_fraction = 0.0
    config.evaluation.validate_every = 2
    config.trainer.max_steps = 6
    with pytest.warns(RuntimeWarning, match="validate_every=2 but the validation data gave no batch") as said:
        TrainingRun(config, show_progress=False).run()
    assert sum("validation data gave no batch" in str(w.message) for w in said) == 1
    assert not (tmp_path / "run" / "best").exists()

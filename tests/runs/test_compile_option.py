"""``trainer.compile`` in a run config and ``dalle2 train --compile``: the trained modules are compiled in place, and
a compiled run saves, averages and resumes exactly like an eager one.

Runs here compile with the cheap ``aot_eager`` backend (``nn.Module.compile`` is patched to record the mode the run
asked for and use that backend); real inductor compilation is tested in tests/trainers/test_compile.py (long)."""

import pytest
import torch

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.runs.loop import TrainingRun
from dalle2_pytorch.trainers.compile import is_compiled
from tests.runs.test_resume import check_resume_is_exact, tiny_decoder_config


@pytest.fixture
def modes(monkeypatch):
    """The ``mode`` of every ``nn.Module.compile`` call, which then compiles with ``aot_eager``."""
    seen = []
    original = torch.nn.Module.compile

    def cheap(self, *args, **kwargs):
        seen.append(kwargs.get("mode"))
        return original(self, backend="aot_eager")

    torch._dynamo.reset()
    monkeypatch.setattr(torch.nn.Module, "compile", cheap)
    yield seen
    torch._dynamo.reset()


def compiled_decoder_config(directory, mode="max-autotune-no-cudagraphs"):
    config = tiny_decoder_config(directory)
    config.trainer.compile = mode
    return config


def test_the_config_field_compiles_the_unets_but_not_their_averages(tmp_path, modes):
    run = TrainingRun(compiled_decoder_config(tmp_path / "run"), show_progress=False)
    assert modes == ["max-autotune-no-cudagraphs"]
    assert is_compiled(run.model.unets[0]) and not is_compiled(run.trainer.parts["unet1"].ema.ema_model)
    assert TrainingRun(tiny_decoder_config(tmp_path / "eager"), show_progress=False) and modes == [
        "max-autotune-no-cudagraphs"]  # the default compiles nothing


@pytest.mark.slow
def test_a_compiled_run_resumes_to_exactly_the_weights_of_an_uninterrupted_one(tmp_path, modes):
    check_resume_is_exact(lambda directory: compiled_decoder_config(directory, True), tmp_path)
    assert set(modes) == {None}  # True: torch.compile's default mode


def test_the_cli_flag_sets_the_mode_and_a_bad_one_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import dalle2_pytorch.runs.loop as loop

    seen = []

    class Recorded:
        def __init__(self, config, resume=False):
            seen.append(config.trainer.compile)
            raise SystemExit(0)

    monkeypatch.setattr(loop, "TrainingRun", Recorded)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for flags, expected in ((["--compile"], True), (["--compile", "max-autotune"], "max-autotune"), ([], False)):
        with pytest.raises(SystemExit):
            main(["train", "decoder", "--images", str(folder), *flags])
        assert seen[-1] == expected
    assert main(["train", "decoder", "--images", str(folder), "--compile", "turbo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --compile='turbo'") and "max-autotune-no-cudagraphs" in err

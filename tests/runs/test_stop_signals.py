"""SIGTERM (a preempted instance, ``kill``, a scheduler's time limit) stops a run after the step it is in, with that
step's checkpoint: nothing trained is lost, and ``--resume`` ends exactly where an uninterrupted run ends.  With two
processes the signal reaches one of them only; both stop after the same step."""

import json
import signal
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from dalle2_pytorch.runs.stop_signals import StopSignals, exit_code
from .distributed import train_two_processes
from .test_multiprocess_resume import STEPS, two_process_config
from .test_resume import tiny_decoder_config

SIGNAL_AT = 5   # the signal arrives just before step 6; the last save was at step 4


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_after_that_step_and_resume_finishes_the_run(tmp_path):
    straight = train_two_processes(tmp_path / "a", "decoder", two_process_config(tiny_decoder_config, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    interrupted = two_process_config(tiny_decoder_config, tmp_path / "interrupted")
    stopped = train_two_processes(tmp_path / "b", "decoder", interrupted,
                                  environment={"SIGNAL_AT_STEP": str(SIGNAL_AT), "SIGNAL_RANK": "1"})
    assert stopped.returncode != 0 and "exitcode  : 143" in stopped.stderr   # 128 + SIGTERM: not a finished job
    assert f"received SIGTERM: stopped after step {SIGNAL_AT + 1}" in stopped.stdout
    summary = json.loads([line for line in stopped.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == SIGNAL_AT + 1 and summary["stopped_by"] == "SIGTERM"
    state = json.loads((tmp_path / "interrupted" / "latest" / "training_state.json").read_text())
    assert state["counters"]["step"] == SIGNAL_AT + 1   # saved at the stop, not only at the last save_every (4)
    seen = [json.loads((tmp_path / "b" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1])   # both trained the same steps

    resumed = train_two_processes(tmp_path / "c", "decoder", interrupted, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == STEPS
    final = [load_file(str(tmp_path / run / "latest" / "trainer.safetensors")) for run in ("straight", "interrupted")]
    differing = [k for k in final[0] if not torch.equal(final[0][k], final[1][k])]
    assert final[0].keys() == final[1].keys() and differing == [], differing[:5]


def test_the_handlers_catch_only_while_active_and_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGTERM)   # caught: the process goes on
        assert signals.received == signal.SIGTERM
        assert signals.agreed(SimpleNamespace(num_processes=1)) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert exit_code("SIGTERM") == 143 and exit_code("SIGUSR1") == 128 + signal.SIGUSR1

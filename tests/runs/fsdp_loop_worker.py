"""Run ``dalle2 train`` (started by torchrun, 2 CPU processes, gloo) with every trained part sharded by FSDP.

Usage: python -m tests.runs.fsdp_loop_worker OUT_DIR dalle2-arguments...  (as tests.runs.multiprocess_worker, whose
recording of the trained batches and ``KILL_AT_STEP`` it keeps).  accelerate turns FSDP on only for GPUs, so the
Accelerator the run makes gets the state an ``accelerate config`` with FSDP (fsdp_version 2) gives, set by hand.
Each rank also writes ``OUT_DIR/eval<rank>.json``: at every validation, the (value, weight) pairs this rank
contributed and the averaged values the run went on with.
"""

import json
import os
import sys
from pathlib import Path

import accelerate

import dalle2_pytorch.runs.loop as loop
from tests.runs import multiprocess_worker
from tests.trainers.fsdp_worker import set_fsdp


class FSDPAccelerator(accelerate.Accelerator):
    """An Accelerator whose state says FSDP, as on a GPU machine with FSDP in the accelerate config."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_fsdp(self, True)


def run() -> int:
    out = Path(sys.argv[1])
    evaluations = []
    average = loop.mean_over_ranks

    def recording_average(local, accelerator):
        result = average(local, accelerator)
        evaluations.append({"local": local, "result": result})
        return result

    accelerate.Accelerator = FSDPAccelerator   # the run imports it when it starts
    loop.mean_over_ranks = recording_average
    original_make = loop.TrainingRun.__init__

    def checked_init(self, config, **kwargs):
        original_make(self, config, **kwargs)
        assert self.trainer.parts and all(part.sharded for part in self.trainer.parts.values()), "not sharded"

    loop.TrainingRun.__init__ = checked_init
    code = multiprocess_worker.run()
    (out / f"eval{os.environ.get('RANK', '0')}.json").write_text(json.dumps(evaluations))
    return code


if __name__ == "__main__":
    sys.exit(run())

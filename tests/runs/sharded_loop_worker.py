"""Run ``dalle2 train`` (started by torchrun, 2 CPU processes, gloo) with every trained part sharded by FSDP, or
with a DeepSpeed ZeRO-2 engine per part when ``SHARDING=zero2``.

Usage: python -m tests.runs.sharded_loop_worker OUT_DIR dalle2-arguments...  (as tests.runs.multiprocess_worker,
whose recording of the trained batches and ``KILL_AT_STEP`` it keeps).  accelerate turns FSDP and DeepSpeed on only
for GPUs, so the Accelerator the run makes gets the state an ``accelerate config`` with FSDP (fsdp_version 2) or
DeepSpeed (zero_stage 2) gives, set by hand.
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

SHARDING = os.environ.get("SHARDING", "fsdp")


class ShardingAccelerator(accelerate.Accelerator):
    """An Accelerator whose state says FSDP or DeepSpeed, as on a GPU machine with that in the accelerate config."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if SHARDING == "zero2":
            from tests.trainers.zero_worker import set_zero

            set_zero(self, 2)
        else:
            set_fsdp(self, True)


def sharded(part) -> bool:
    return part.engine is not None if SHARDING == "zero2" else part.sharded


def run() -> int:
    out = Path(sys.argv[1])
    evaluations = []
    average = loop.mean_over_ranks

    def recording_average(local, accelerator):
        result = average(local, accelerator)
        evaluations.append({"local": local, "result": result})
        return result

    accelerate.Accelerator = ShardingAccelerator   # the run imports it when it starts
    loop.mean_over_ranks = recording_average
    original_make = loop.TrainingRun.__init__

    def checked_init(self, config, **kwargs):
        original_make(self, config, **kwargs)
        assert self.trainer.parts and all(sharded(part) for part in self.trainer.parts.values()), "not sharded"

    loop.TrainingRun.__init__ = checked_init
    code = multiprocess_worker.run()
    (out / f"eval{os.environ.get('RANK', '0')}.json").write_text(json.dumps(evaluations))
    return code


if __name__ == "__main__":
    sys.exit(run())

"""Run ``dalle2 train`` in this process (started by torchrun) and write which samples this rank trained on.

Usage: python -m tests.runs.multiprocess_worker OUT_DIR dalle2-arguments...
With ``KILL_AT_STEP=n`` in the environment every rank dies (``os._exit``, no clean-up, as under SIGKILL) just before
training step n, once all ranks got there (so the checkpoint saved before it is complete on disk).  With
``SIGNAL_AT_STEP=n`` (and ``SIGNAL_RANK=r``, default every rank) rank r sends itself SIGTERM just before step n, as a
scheduler preempting the job would.
"""

import json
import os
import sys
from pathlib import Path

import dalle2_pytorch.runs.loop as loop
from dalle2_pytorch.cli.main import main


def run() -> int:
    out = Path(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
    signal_at = int(os.environ.get("SIGNAL_AT_STEP", "-1"))
    signal_rank = os.environ.get("SIGNAL_RANK")
    seen: list[int] = []
    original = loop.TrainingRun.__init__

    def on_batch(step, batch):
        if step == signal_at and signal_rank in (None, str(rank)):
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        if step == kill_at:
            import torch.distributed as dist

            dist.barrier()
            (out / f"rank{rank}.json").write_text(json.dumps(seen))
            os._exit(9)
        if "index" in batch:
            seen.extend(batch["index"].tolist())
        else:
            seen.append(len(batch["images"] if "images" in batch else batch["image_embed"]))

    def recording_init(self, config, **kwargs):
        kwargs["on_batch"] = on_batch
        original(self, config, **kwargs)

    loop.TrainingRun.__init__ = recording_init
    code = main(sys.argv[2:])
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    return code


if __name__ == "__main__":
    sys.exit(run())

"""Run ``dalle2 train`` in this process (started by torchrun) and write which samples this rank trained on.

Usage: python -m tests.runs.multiprocess_worker OUT_DIR dalle2-arguments...
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
    seen: list[int] = []
    original = loop.TrainingRun.__init__

    def recording_init(self, config, **kwargs):
        kwargs["on_batch"] = lambda step, batch: seen.extend(batch["index"].tolist())
        original(self, config, **kwargs)

    loop.TrainingRun.__init__ = recording_init
    code = main(sys.argv[2:])
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    return code


if __name__ == "__main__":
    sys.exit(run())

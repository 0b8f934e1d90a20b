"""Stop a training run cleanly on the signals schedulers send before they kill a job.

A preempted cloud instance, a SLURM job at its time limit (``--signal=USR1@120``) or ``kill PID`` sends SIGTERM or
SIGUSR1 some seconds before the hard kill.  Without a handler the run dies at once and loses every step since its last
save.  While :class:`StopSignals` is active those two signals only raise a flag; the run finishes the step it is in,
writes ``latest`` and stops, and ``--resume`` continues exactly there.  With several processes the signal may reach
one of them only (or reach them at different steps): the flag is agreed on after every step (one ``all_reduce``), so
all stop after the same step and write one checkpoint together.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

import torch

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class StopSignals:
    """Context manager: SIGTERM and SIGUSR1 set :attr:`received` instead of ending the process (the handlers before it
    are put back on exit).  Outside the main thread (a run inside a server's worker thread) signals cannot be caught:
    nothing is installed and the run ends as before on a signal."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)   # Windows has no SIGUSR1
                if number is not None:
                    self._previous[number] = signal.signal(number, self._catch)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _catch(self, number: int, frame: object) -> None:
        self.received = number

    def agreed(self, accelerator: Any) -> Optional[str]:
        """The name of a stop signal any process received (the same answer on every process), or None.  With several
        processes a collective: every process calls it after every step."""
        number = self.received or 0
        if accelerator.num_processes > 1:
            import torch.distributed as dist

            flag = torch.tensor([number], device=accelerator.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            number = int(flag.item())
        return signal.Signals(number).name if number else None


def exit_code(signal_name: str) -> int:
    """The exit status of a process ended by ``signal_name`` (128 + its number), which a run stopped by it returns
    after saving, so that schedulers and scripts see an interrupted job, not a finished one."""
    return 128 + int(getattr(signal, signal_name))

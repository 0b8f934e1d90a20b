"""Catch launches that did not give the run the processes they asked for.

Two traps of ``accelerate launch`` on a machine without GPUs, both found with accelerate 1.15:

- ``accelerate launch --cpu --num_processes 2`` (or an accelerate config with ``distributed_type: MULTI_CPU``)
  starts **one** process: accelerate's CPU launcher starts several only through ``mpirun`` with a host file.  It
  leaves a trace: it sets ``MASTER_ADDR``/``MASTER_PORT`` only when asked for more than one process, and
  ``ACCELERATE_USE_CPU``, yet no launcher set ``WORLD_SIZE`` and no MPI runtime set its rank variables.  The run
  goes on in one process, with a warning naming the command that starts several.
- ``accelerate launch --multi_gpu`` or ``torchrun`` without ``ACCELERATE_USE_CPU=true`` starts the processes
  (``WORLD_SIZE`` > 1) but, with no GPU, accelerate sets each up as a lone process: each would train alone and
  write the same checkpoint folder.  That is an error.

With several processes, the checkpoint folder must be one folder that every process sees (on several machines: a
shared file system); a folder local to each machine trains fine and fails only at ``--resume``, so it is checked at
the start (:func:`check_shared_folder`); so must the run config, which each machine may read from a copy of its own
(:func:`check_same_config`).

And one of ``ACCELERATE_USE_CPU=true`` with ``--use_deepspeed`` or ``--use_fsdp``: accelerate turns DeepSpeed and FSDP
on only with GPUs and otherwise drops them without a word; the run says so (it trains as plain data parallelism).
"""

from __future__ import annotations

import os
import secrets
import socket
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from dalle2_pytorch.runs.resume_check import config_leaves

WORKING_COMMAND = ("ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N -m "
                   "dalle2_pytorch.cli.main train ...  (or ACCELERATE_USE_CPU=true torchrun --standalone "
                   "--nproc_per_node N -m dalle2_pytorch.cli.main train ...)")
# set by an MPI runtime in each process it starts (accelerate's multi-CPU launcher is mpirun)
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
# set by `accelerate launch` in every process it starts, whichever launcher it chose
ACCELERATE_LAUNCH_VARIABLES = ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_DYNAMO_MODE")


def _true(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "on")


def single_process_launch_warning(num_processes: int, environ: Mapping[str, str]) -> Optional[str]:
    """The warning for a run that ``accelerate launch --cpu --num_processes N`` (N > 1) left as one process, or None
    when the environment shows no such launch (or the run has several processes)."""
    if num_processes != 1:
        return None
    launched_by_accelerate = all(name in environ for name in ACCELERATE_LAUNCH_VARIABLES)
    asked_for_several = "MASTER_ADDR" in environ and "MASTER_PORT" in environ
    started_by_a_launcher = "WORLD_SIZE" in environ or any(name in environ for name in MPI_SIZE_VARIABLES)
    if launched_by_accelerate and _true(environ.get("ACCELERATE_USE_CPU")) and asked_for_several \
            and not started_by_a_launcher:
        return ("accelerate launch --cpu with more than one process started only this one process (accelerate's "
                "CPU launcher needs mpirun and --mpirun_hostfile for more); training goes on in 1 process. To train "
                f"in N CPU processes run: {WORKING_COMMAND}")
    return None


def dropped_engine_warning(distributed_type: str, environ: Mapping[str, str]) -> Optional[str]:
    """The warning for a launch that asked for DeepSpeed or FSDP which accelerate did not turn on (``distributed_type``
    is accelerate's, e.g. ``'MULTI_CPU'``), or None."""
    for engine, variable in (("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED"), ("FSDP", "ACCELERATE_USE_FSDP")):
        if _true(environ.get(variable)) and distributed_type != engine:
            return (f"the launch asked for {engine} ({variable}=true) but accelerate set this run up as "
                    f"{distributed_type} (accelerate turns {engine} on only with GPUs, not with ACCELERATE_USE_CPU or "
                    f"--cpu): training goes on without {engine}")
    return None


def check_launch(num_processes: int, environ: Optional[Mapping[str, str]] = None,
                 distributed_type: Optional[str] = None) -> None:
    """Warn about (or, when processes would overwrite each other's checkpoints, refuse) a launch whose processes
    accelerate did not join: ``num_processes`` is what accelerate set up, ``environ`` the process's environment;
    ``distributed_type`` (accelerate's, by name) also warns when a DeepSpeed or FSDP launch was dropped."""
    environ = os.environ if environ is None else environ
    if distributed_type is not None:
        dropped = dropped_engine_warning(distributed_type, environ)
        if dropped is not None:
            warnings.warn(dropped, RuntimeWarning, stacklevel=2)
    launched = environ.get("WORLD_SIZE", "")
    if launched.isdigit() and int(launched) > 1 and num_processes == 1:
        raise RuntimeError(f"the launcher started WORLD_SIZE={launched} processes but accelerate set this one up as a "
                           f"lone process (no GPU, and ACCELERATE_USE_CPU is not set), so each would train alone and "
                           f"write the same checkpoints. On CPUs run: {WORKING_COMMAND}")
    message = single_process_launch_warning(num_processes, environ)
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def check_shared_folder(directory: Path, accelerator: Any) -> None:
    """With several processes: the main process leaves a marker file in ``directory`` and every process looks for it;
    when some cannot see it (each machine has a folder of its own by that path), every process stops with the same
    error naming them.  A collective: every process calls it at the start of the run."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list, gather_object

    token = [secrets.token_hex(8) if accelerator.is_main_process else None]
    broadcast_object_list(token, from_process=0)
    marker = Path(directory) / f".shared-check-{token[0]}"
    if accelerator.is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(socket.gethostname())
    accelerator.wait_for_everyone()
    sees = gather_object([(accelerator.process_index, socket.gethostname(), marker.is_file())])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    blind = [f"process {rank} on {host}" for rank, host, seen in sees if not seen]
    if blind:
        raise RuntimeError(f"checkpointing.directory {str(directory)!r} is not one folder shared by every process: "
                           f"{', '.join(blind)} cannot see what the main process wrote there. On several machines put "
                           "it on a file system they all mount (and use an absolute path), so that every process "
                           "reads the same `latest` on --resume")


# settings that may differ between processes: only the main process logs, and threads are per machine
PER_PROCESS_SETTINGS = ("tracker", "trainer.threads", "data.num_workers")


def check_same_config(record: dict[str, Any], accelerator: Any) -> None:
    """With several processes: every process must train from the same config (``record``: its JSON form), since each
    builds the model and reads the data from its own; a process whose config differs (a stale copy on one machine)
    would train another model or hang in the first collective.  One error, on every process, listing the differences
    (logging and thread settings may differ); different library or torch versions are a warning.  A collective."""
    if accelerator.num_processes == 1:
        return
    import torch
    from accelerate.utils import gather_object

    from dalle2_pytorch import __version__

    everyone = gather_object([(accelerator.process_index, socket.gethostname(), record,
                               (__version__, torch.__version__))])
    main_record, main_versions = everyone[0][2], everyone[0][3]
    reference = {path: value for path, value in config_leaves(main_record) if not path.startswith(PER_PROCESS_SETTINGS)}
    problems, versions = [], []
    for rank, host, other, other_versions in everyone[1:]:
        theirs = {path: value for path, value in config_leaves(other) if not path.startswith(PER_PROCESS_SETTINGS)}
        differing = [f"{path}: {reference.get(path, '<unset>')!r} on process 0, {theirs.get(path, '<unset>')!r} on "
                     f"process {rank}" for path in sorted(set(reference) | set(theirs))
                     if reference.get(path) != theirs.get(path)]
        if differing:
            problems.append(f"process {rank} on {host}:\n    " + "\n    ".join(differing[:10])
                            + (f"\n    ... and {len(differing) - 10} more" if len(differing) > 10 else ""))
        if other_versions != main_versions:
            versions.append(f"process {rank} on {host} runs dalle2_pytorch {other_versions[0]} with torch "
                            f"{other_versions[1]}")
    if problems:
        raise ValueError("the processes do not train from the same config (give every machine the same config file): "
                         + "\n  ".join(problems))
    if versions and accelerator.is_main_process:
        warnings.warn(f"process 0 runs dalle2_pytorch {main_versions[0]} with torch {main_versions[1]}, but "
                      + "; ".join(versions) + ": install the same versions on every machine", RuntimeWarning,
                      stacklevel=2)

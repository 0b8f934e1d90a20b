"""Shared pieces of the side-by-side benchmark: workload sizes, timing, peak memory, result I/O.

Both sides (`reference_side.py` in the reference venv, `ours_side.py` in ours) import this file, so
it uses only the standard library and torch.  Keeping the sizes here is what makes the comparison
like-for-like: each side builds its models from exactly these keyword arguments.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

RESULT_MARKER = "BENCHMARK_RESULT "
WORKLOADS = ("decoder_train", "prior_train", "decoder_sample", "prior_sample")
NUM_THREADS = 2


@dataclass(frozen=True)
class Sizes:
    """Every size a workload needs; `full` matches the reference measurement, `quick` is a smoke test."""

    unet_dim: int
    unet_dim_mults: tuple[int, ...]
    unet_cond_dim: int
    image_size: int
    image_embed_dim: int
    decoder_batch: int
    prior_dim: int
    prior_depth: int
    prior_heads: int
    prior_dim_head: int
    prior_batch: int
    timesteps: int
    decoder_sample_batch: int
    prior_sample_batch: int
    sample_steps: int
    warmup_steps: int
    timed_steps: int
    prior_timed_steps: int


FULL = Sizes(
    unet_dim=64, unet_dim_mults=(1, 2, 4, 8), unet_cond_dim=128, image_size=64, image_embed_dim=512,
    decoder_batch=8, prior_dim=512, prior_depth=6, prior_heads=8, prior_dim_head=64, prior_batch=64,
    timesteps=1000, decoder_sample_batch=4, prior_sample_batch=16, sample_steps=50,
    warmup_steps=2, timed_steps=5, prior_timed_steps=3,
)

QUICK = Sizes(
    unet_dim=16, unet_dim_mults=(1, 2), unet_cond_dim=16, image_size=16, image_embed_dim=32,
    decoder_batch=2, prior_dim=32, prior_depth=1, prior_heads=2, prior_dim_head=16, prior_batch=4,
    timesteps=100, decoder_sample_batch=1, prior_sample_batch=2, sample_steps=4,
    warmup_steps=1, timed_steps=2, prior_timed_steps=2,
)


def sizes_for(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def unet_kwargs(s: Sizes) -> dict:
    """Unet keywords shared by both sides (cond_dim != image_embed_dim avoids the reference's Identity bug)."""
    return dict(
        dim=s.unet_dim, image_embed_dim=s.image_embed_dim, cond_dim=s.unet_cond_dim, channels=3,
        dim_mults=s.unet_dim_mults, cond_on_image_embeds=True,
    )


def decoder_kwargs(s: Sizes) -> dict:
    """Decoder keywords: the reference defaults made explicit, plus DDIM sampling at `sample_steps`."""
    return dict(
        image_size=s.image_size, timesteps=s.timesteps, sample_timesteps=s.sample_steps,
        image_cond_drop_prob=0.1, text_cond_drop_prob=0.5, learned_variance=True, loss_type="l2",
    )


def prior_network_kwargs(s: Sizes) -> dict:
    return dict(dim=s.prior_dim, depth=s.prior_depth, heads=s.prior_heads, dim_head=s.prior_dim_head)


def prior_kwargs(s: Sizes) -> dict:
    return dict(
        image_embed_dim=s.prior_dim, timesteps=s.timesteps, sample_timesteps=s.sample_steps,
        cond_drop_prob=0.0, condition_on_text_encodings=False,
    )


@dataclass
class Result:
    """One workload's measurement on one side; `items_per_step / median step seconds` is the throughput."""

    side: str
    workload: str
    quick: bool
    items_per_step: int
    step_seconds: list[float]
    peak_rss_mb: float
    torch_version: str
    package_version: str
    step_cpu_seconds: list[float] = field(default_factory=list)  # process CPU time (all threads) per step
    device: str = "cpu"
    peak_device_mb: float = 0.0  # torch.cuda.max_memory_allocated on a GPU run
    extra: dict = field(default_factory=dict)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(self.step_cpu_seconds) if self.step_cpu_seconds else float("nan")

    @property
    def items_per_second(self) -> float:
        return self.items_per_step / self.median_seconds

    @property
    def seconds_per_item(self) -> float:
        return self.median_seconds / self.items_per_step


def result_from_json(line: str) -> Result:
    return Result(**json.loads(line))


def timed_steps(step: Callable[[], object], warmup: int, timed: int) -> tuple[list[float], list[float]]:
    """Run `step` `warmup` times untimed, then `timed` times; return each timed call's wall and CPU seconds.

    CPU seconds (this process, all threads) are reported beside wall time because the machines this runs
    on are often shared: other load stretches wall time but barely changes the work a step costs.
    """
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(timed):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if platform.system() == "Darwin" else 1024
    return peak / divisor


def side_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that runs in seconds")
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda); default cpu")
    parser.add_argument("--opt-ins", default="", help="ours only: opt-ins joined by '+' (bf16, channels_last, "
                        "keep_norm); default none, the configuration a user gets")
    return parser.parse_args()


def prepare_torch(seed: int = 0):
    """Import torch with the thread count and seed fixed the same way on both sides."""
    import torch

    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(seed)
    return torch


def emit(result: Result) -> None:
    """Print the result as one marked JSON line; `compare.py` picks it out of the side's stdout."""
    sys.stdout.write(RESULT_MARKER + json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()

"""Run the benchmark workloads on the reference DALLE2-pytorch 1.15.6 and on ours, and print ratios.

Every workload runs in a fresh subprocess per side (so peak RSS is that workload's alone), the two
sides one after the other, never at the same time.  Typical use, after `benchmarks/setup_reference_venv.sh`:

    python benchmarks/compare.py                      # full sizes, both sides (~15 min on 2 cores)
    python benchmarks/compare.py --quick --ours-only  # smoke test of our side, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from typing import Optional

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS_DIR)
sys.path.insert(0, BENCHMARKS_DIR)

from common import NUM_THREADS, RESULT_MARKER, WORKLOADS, Result, result_from_json  # noqa: E402

SIDES = {"reference": "reference_side.py", "ours": "ours_side.py"}


def _default_ours_python() -> str:
    twin = os.path.join(REPO_ROOT, ".bench-venv", "bin", "python")
    return twin if os.path.exists(twin) else sys.executable


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; checks that the scripts run")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--ours-only", action="store_true", help="run only our side")
    only.add_argument("--reference-only", action="store_true", help="run only the reference side")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--reference-python", default=os.path.join(REPO_ROOT, ".ref-venv", "bin", "python"),
                        help="interpreter of the venv holding dalle2-pytorch==1.15.6")
    parser.add_argument("--ours-python", default=_default_ours_python(),
                        help="interpreter that imports this repository's dalle2_pytorch "
                             "(default: .bench-venv, the twin venv on the reference's torch, else this one)")
    parser.add_argument("--device", default="cpu", help="torch device for both sides: cpu (default) or cuda")
    parser.add_argument("--ours-opt-ins", default="", metavar="A+B",
                        help="run our side with documented opt-ins (bf16, channels_last, keep_norm joined by '+'); "
                             "default none: the configuration a user gets")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per workload and side")
    parser.add_argument("--json-out", help="also write every result (and failure) to this JSON file")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="run nothing: print the table of results saved earlier with --json-out "
                             "(e.g. one file per side, measured one after the other on the same machine)")
    return parser.parse_args(argv)


def run_side(side: str, python: str, workload: str, quick: bool, timeout: float, device: str = "cpu",
             opt_ins: str = "") -> Result:
    """Run one workload on one side in a fresh interpreter and return its parsed result (``opt_ins``: ours only)."""
    python = os.path.abspath(python) if os.sep in python else (shutil.which(python) or python)
    if not os.path.exists(python):
        raise FileNotFoundError(f"{side} interpreter {python!r} does not exist (run benchmarks/setup_reference_venv.sh)")
    command = [python, os.path.join(BENCHMARKS_DIR, SIDES[side]), "--workload", workload, "--device", device]
    if quick:
        command.append("--quick")
    if opt_ins:
        command += ["--opt-ins", opt_ins]
    environment = dict(os.environ)  # each side script guards against importing the wrong dalle2_pytorch
    environment.update(OMP_NUM_THREADS=str(NUM_THREADS), MKL_NUM_THREADS=str(NUM_THREADS), TQDM_DISABLE="1")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment,
                               cwd=BENCHMARKS_DIR)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout)[-3000:]
        raise RuntimeError(f"{side} {workload} failed (exit {completed.returncode}):\n{tail}")
    return result_from_json(lines[-1][len(RESULT_MARKER):])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_description() -> str:
    return f"{cpu_model()} ({os.cpu_count()} visible cores)"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _ratio(numerator: float, denominator: float) -> str:
    ratio = numerator / denominator if denominator > 0 else float("nan")
    return f"{ratio:.2f}x" if ratio == ratio else "-"


def _memory_mb(result: Result) -> float:
    """Peak GPU memory on a GPU run (what limits batch size there), else peak RSS."""
    return result.peak_device_mb if result.device.startswith("cuda") else result.peak_rss_mb


def format_table(results: dict[str, dict[str, Result]]) -> str:
    """Markdown table: per workload both sides' time per step (wall and CPU), items/s and peak memory, with ratios.

    Speed-up is reference time / our time (above 1 means we are faster); memory is ours / the reference's
    (below 1 means we use less).  NFE is the denoiser calls of one sampling run (reference/ours).
    """
    any_result = next((r for sides in results.values() for r in sides.values()), None)
    memory = "peak GPU MB" if any_result is not None and any_result.device.startswith("cuda") else "peak RSS MB"
    columns = ["workload", "items/step", "ref wall s/step", "ours wall s/step", "speed-up (wall)",
               "ref CPU s/step", "ours CPU s/step", "speed-up (CPU)", "ref items/s", "ours items/s",
               f"ref {memory}", f"ours {memory}", "memory ours/ref", "NFE ref/ours"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for workload, sides in results.items():
        ref, ours = sides.get("reference"), sides.get("ours")
        both = ref is not None and ours is not None
        cells = [workload, str((ref or ours).items_per_step)]
        cells += [f"{r.median_seconds:.3f}" if r else "-" for r in (ref, ours)]
        cells.append(_ratio(ref.median_seconds, ours.median_seconds) if both else "-")
        cells += [f"{r.median_cpu_seconds:.3f}" if r else "-" for r in (ref, ours)]
        cells.append(_ratio(ref.median_cpu_seconds, ours.median_cpu_seconds) if both else "-")
        cells += [f"{r.items_per_second:.2f}" if r else "-" for r in (ref, ours)]
        cells += [f"{_memory_mb(r):.0f}" if r else "-" for r in (ref, ours)]
        cells.append(_ratio(_memory_mb(ours), _memory_mb(ref)) if both else "-")
        calls = [str(r.extra.get("network_calls", "-")) if r else "-" for r in (ref, ours)]
        cells.append("/".join(calls) if any(c != "-" for c in calls) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment_summary(results: dict[str, dict[str, Result]], quick: bool, cpu: Optional[str] = None,
                        date: Optional[str] = None) -> str:
    versions = sorted({f"{r.side}: dalle2_pytorch {r.package_version}, torch {r.torch_version}"
                       for sides in results.values() for r in sides.values()})
    return "\n".join([
        f"date: {date or utc_now()}", f"cpu: {cpu or cpu_description()}, torch threads: {NUM_THREADS}",
        f"device: {', '.join(sorted({r.device for sides in results.values() for r in sides.values()})) or '-'}",
        f"sizes: {'quick (smoke test, not a measurement)' if quick else 'full'}", *versions,
        *sorted({f"ours, {workload}: opt-ins {r.extra['opt_ins']}" for workload, sides in results.items()
                 for r in sides.values() if r.extra.get("opt_ins")}),
    ])


def load_results(paths: list[str]) -> tuple[dict[str, dict[str, Result]], dict]:
    """Results saved by --json-out (later files override earlier ones) and the last file's run details."""
    results: dict[str, dict[str, Result]] = {}
    details: dict = {}
    for path in paths:
        with open(path) as handle:
            payload = json.load(handle)
        details = {key: payload.get(key) for key in ("quick", "cpu", "date")}
        for workload, by_side in payload["results"].items():
            for side, fields in by_side.items():
                results.setdefault(workload, {})[side] = Result(**fields)
    ordered = {w: results[w] for w in WORKLOADS if w in results}
    return ordered, details


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.merge:
        results, details = load_results(args.merge)
        print(environment_summary(results, bool(details["quick"]), details["cpu"] or "not recorded",
                                  details["date"] or "not recorded"))
        print()
        print(format_table(results))
        return 0
    if args.ours_opt_ins and any(not workload.endswith("_train") for workload in args.workloads):
        raise SystemExit("--ours-opt-ins applies to the training workloads: add --workloads decoder_train prior_train")
    sides = ["ours"] if args.ours_only else ["reference"] if args.reference_only else ["reference", "ours"]
    pythons = {"reference": args.reference_python, "ours": args.ours_python}
    results: dict[str, dict[str, Result]] = {}
    failures: list[str] = []
    for workload in args.workloads:
        for side in sides:
            print(f"running {side} {workload}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
            try:
                results.setdefault(workload, {})[side] = run_side(
                    side, pythons[side], workload, args.quick, args.timeout, args.device,
                    args.ours_opt_ins if side == "ours" else "")
            except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as error:
                failures.append(str(error))
                print(error, file=sys.stderr, flush=True)
    results = {workload: sides_ for workload, sides_ in results.items() if sides_}
    print(environment_summary(results, args.quick))
    print()
    print(format_table(results))
    if args.json_out:
        payload = {"results": {w: {s: asdict(r) for s, r in by_side.items()} for w, by_side in results.items()},
                   "failures": failures, "cpu": cpu_description(), "date": utc_now(), "quick": args.quick}
        with open(args.json_out, "w") as handle:
            json.dump(payload, handle, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Keeps the benchmark scripts from rotting: runs `benchmarks/compare.py --quick --ours-only` on our side.

Uses this interpreter (the project's .venv) rather than the benchmark's twin venv, and tiny sizes, so it
takes seconds; the real measurement is run by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPARE = os.path.join(REPO_ROOT, "benchmarks", "compare.py")
WORKLOADS = ("decoder_train", "prior_train", "decoder_sample", "prior_sample")


def _missing_model_classes() -> str:
    """Name the model classes the benchmark needs that cannot be imported yet ('' when all import)."""
    missing = []
    for module, name in (("dalle2_pytorch.decoder.unet", "Unet"), ("dalle2_pytorch.decoder.decoder", "Decoder"),
                         ("dalle2_pytorch.prior.network", "DiffusionPriorNetwork"),
                         ("dalle2_pytorch.prior.diffusion_prior", "DiffusionPrior")):
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{module}.{name} ({error})")
    return "; ".join(missing)


@pytest.mark.slow
def test_compare_quick_runs_every_workload_on_our_side(tmp_path):
    missing = _missing_model_classes()
    if missing:
        pytest.skip(f"our model classes are not importable yet: {missing}")
    json_out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, COMPARE, "--quick", "--ours-only", "--ours-python", sys.executable,
         "--json-out", str(json_out)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    payload = json.loads(json_out.read_text())
    assert payload["failures"] == []
    assert sorted(payload["results"]) == sorted(WORKLOADS)
    for workload, by_side in payload["results"].items():
        result = by_side["ours"]
        assert result["quick"] is True
        assert len(result["step_seconds"]) >= 1 and all(s > 0 for s in result["step_seconds"]), workload
        assert result["peak_rss_mb"] > 0
    assert payload["results"]["decoder_sample"]["ours"]["extra"]["output_shape"] == [1, 3, 16, 16]
    assert payload["results"]["prior_sample"]["ours"]["extra"]["output_shape"] == [2, 32]
    assert payload["results"]["prior_sample"]["ours"]["extra"]["network_calls"] == 4  # one per DDIM step
    assert payload["results"]["decoder_sample"]["ours"]["extra"]["network_calls"] == 4
    assert "| decoder_train |" in completed.stdout


@pytest.mark.slow
def test_compare_runs_our_training_workloads_with_opt_ins(tmp_path):
    """--ours-opt-ins builds our side with the documented fast paths and records the ones that apply per workload;
    the sampling workloads and the reference side refuse them."""
    json_out = tmp_path / "results.json"
    command = [sys.executable, COMPARE, "--quick", "--ours-only", "--ours-python", sys.executable,
               "--ours-opt-ins", "bf16+channels_last+keep_norm"]
    completed = subprocess.run(command + ["--workloads", "decoder_train", "prior_train", "--json-out", str(json_out)],
                               capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads(json_out.read_text())["results"]
    assert results["decoder_train"]["ours"]["extra"]["opt_ins"] == "bf16+channels_last+keep_norm"
    assert results["prior_train"]["ours"]["extra"]["opt_ins"] == "bf16"
    assert "ours, decoder_train: opt-ins bf16+channels_last+keep_norm" in completed.stdout
    refused = subprocess.run(command + ["--workloads", "decoder_sample"], capture_output=True, text=True,
                             timeout=60, cwd=REPO_ROOT)
    assert refused.returncode != 0 and "training workloads" in refused.stderr


def test_our_backend_applies_each_opt_in():
    import torch

    for name in ("common", "workloads", "ours_side"):  # a same-named module imported elsewhere must not stand in
        sys.modules.pop(name, None)
    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    try:
        ours_side, common = importlib.import_module("ours_side"), importlib.import_module("common")
    finally:
        sys.path.remove(os.path.join(REPO_ROOT, "benchmarks"))
    sizes = common.sizes_for(True)
    plain = ours_side._backend()
    fast = ours_side._backend(ours_side.parse_opt_ins("keep_norm+bf16+channels_last"))
    assert fast.opt_ins == ("bf16", "channels_last", "keep_norm") and plain.opt_ins == ()
    unet_kwargs, decoder_kwargs = common.unet_kwargs(sizes), common.decoder_kwargs(sizes)
    unet = fast.build_decoder(unet_kwargs, decoder_kwargs).unets[0]
    assert unet.config["channels_last"] is True and unet.config["recompute_norm_in_backward"] is False
    assert "channels_last" not in plain.build_decoder(unet_kwargs, decoder_kwargs).unets[0].config
    with fast.loss_context():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with plain.loss_context():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(SystemExit, match="unknown"):
        ours_side.parse_opt_ins("bf16+fp8")


def test_table_reports_ratios_of_reference_over_ours():
    benchmarks_dir = os.path.join(REPO_ROOT, "benchmarks")
    for name in ("common", "compare"):  # a same-named module imported elsewhere must not stand in
        module = sys.modules.get(name)
        if module is not None and os.path.dirname(getattr(module, "__file__", "") or "") != benchmarks_dir:
            del sys.modules[name]
    sys.path.insert(0, benchmarks_dir)
    try:
        from common import Result
        from compare import format_table
    finally:
        while benchmarks_dir in sys.path:  # compare.py adds it too
            sys.path.remove(benchmarks_dir)

    def result(side: str, seconds: float, rss: float) -> Result:
        return Result(side=side, workload="decoder_train", quick=True, items_per_step=8, step_seconds=[seconds],
                      peak_rss_mb=rss, torch_version="x", package_version="y", step_cpu_seconds=[2 * seconds])

    table = format_table({"decoder_train": {"reference": result("reference", 4.0, 3000.0),
                                            "ours": result("ours", 1.0, 1500.0)}})
    row = table.splitlines()[-1]
    assert row.startswith("| decoder_train | 8 | 4.000 | 1.000 | 4.00x |")
    assert "| 2.00 | 8.00 |" in row and row.endswith("| 3000 | 1500 | 0.50x | - |")

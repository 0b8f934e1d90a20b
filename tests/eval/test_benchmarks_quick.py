"""The evaluation benchmarks' --quick modes run end to end and write their outputs."""

import json

import pytest

from tests.benchmark_scripts import load_benchmark as load



@pytest.mark.slow
def test_sampler_quality_quick_writes_table_json_and_plot(tmp_path):
    result = load("sampler_quality").main(["--quick", "--work-dir", str(tmp_path / "work"),
                                           "--out-dir", str(tmp_path / "out"), "--threads", "1"])
    assert {row["sampler"] for row in result["rows"]} == {"ddpm", "ddim", "dpmpp_2m", "euler", "heun"}
    assert all(row["nfe"] <= nfe for row, nfe in zip(result["rows"], [2, 4] * 5))
    assert result["reference"]["nfe"] == 8
    saved = json.loads((tmp_path / "out" / "sampler_quality_quick.json").read_text())
    assert saved["rows"] == result["rows"]
    assert (tmp_path / "out" / "sampler_quality_quick.png").stat().st_size > 1000
    assert "| DPM-Solver++(2M) |" in (tmp_path / "out" / "sampler_quality_quick.md").read_text()
    assert (tmp_path / "work" / "quick" / "decoder" / "benchmark_stage.json").is_file()


def test_matmul_ceiling_quick_reports_a_ratio(tmp_path):
    result = load("matmul_ceiling").main(["--quick", "--threads", "1", "--json-out", str(tmp_path / "m.json")])
    assert result["matmul"]["gflops_per_cpu_second"] > 0
    assert result["decoder_step"]["flops_per_step"] > 0
    assert 0 < result["ratio_cpu_time"]
    assert json.loads((tmp_path / "m.json").read_text())["quick"] is True

"""benchmarks/time_to_quality.py: its 'within noise' rule, the matched NFE, and a --quick run end to end."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark as load



@pytest.fixture(scope="module")
def ttq():
    return load("time_to_quality")


def test_faithfulness_tolerance_is_two_standard_errors_of_a_difference(ttq):
    # 72 images, both at 90 %: pooled p = (65 + 65 + 1) / 146, SE of the difference = sqrt(2 p (1 - p) / 72)
    p = 131 / 146
    assert ttq.faithfulness_tolerance(0.9, 0.9, 72) == pytest.approx(2 * (2 * p * (1 - p) / 72) ** 0.5)
    # a reference at 100 % still leaves room for noise (add-one smoothing), and more images leave less
    assert 0 < ttq.faithfulness_tolerance(1.0, 1.0, 1000) < ttq.faithfulness_tolerance(1.0, 1.0, 72)


def test_within_noise_needs_both_faithfulness_and_fid(ttq):
    reference = {"faithfulness": 0.9, "fid_vs_real": 0.010}
    n, floor = 72, 0.005
    slack = ttq.faithfulness_tolerance(0.9, 0.85, n)
    assert slack > 0.05  # 0.85 of 72 images is within two standard errors of 0.9
    assert ttq.within_noise({"faithfulness": 0.85, "fid_vs_real": 0.0149}, reference, floor, n)
    assert not ttq.within_noise({"faithfulness": 0.85, "fid_vs_real": 0.0151}, reference, floor, n)  # FID
    assert not ttq.within_noise({"faithfulness": 0.6, "fid_vs_real": 0.009}, reference, floor, n)  # judge
    assert ttq.within_noise({"faithfulness": 1.0, "fid_vs_real": 0.001}, reference, floor, n)  # better is fine


def test_matched_nfe_is_the_first_of_two_passes_in_a_row(ttq):
    def rows(*passes):
        return [{"nfe": 5 * 2 ** i, "within_noise": ok} for i, ok in enumerate(passes)]

    assert ttq.matched_nfe(rows(False, True, False, True, True))["nfe"] == 40
    assert ttq.matched_nfe(rows(True, True))["nfe"] == 5
    last = ttq.matched_nfe(rows(False, True, False, True))
    assert last["nfe"] == 40 and last["single"] is True
    assert ttq.matched_nfe(rows(True, False)) is None
    assert ttq.matched_nfe([]) is None


@pytest.mark.slow
def test_quick_run_sweeps_every_sampler_against_full_ddpm(ttq, tmp_path, capsys):
    out = ttq.main(["--quick", "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")])
    size = out["sizes"]["16"]
    assert out["quick"] is True and out["threads"] == 1
    reference = size["reference"]
    assert reference["sampler"] == "ddpm" and reference["nfe"] == ttq.QUICK.timesteps  # every training step
    assert reference["cpu_s_per_image"] > 0 and size["real_floor"]["fid_vs_real"] > 0
    samplers = [row["sampler"] for row in size["rows"]]
    assert set(samplers) == set(ttq.SAMPLERS) == set(size["summary"])
    for sampler in ttq.SAMPLERS:
        rows = [row for row in size["rows"] if row["sampler"] == sampler]
        nfes = [row["nfe"] for row in rows]
        assert nfes == sorted(nfes) and all(row["cpu_s_per_image"] > 0 for row in rows)
        # the sweep stops at the second of two within-noise rows in a row
        flags = [row["within_noise"] for row in rows]
        assert not any(a and b for a, b in zip(flags[:-2], flags[1:-1]))
        match = size["summary"][sampler]
        if match is not None:
            assert match["cpu_ratio"] == pytest.approx(reference["cpu_s_per_image"] / match["cpu_s_per_image"])
    saved = json.loads((tmp_path / "out" / "time_to_quality_quick.json").read_text())
    assert saved["sizes"]["16"]["rows"] == size["rows"]
    table = (tmp_path / "out" / "time_to_quality_quick.md").read_text()
    assert "**DDPM (reference)** | 50 |" in table and "| DPM-Solver++(2M) |" in table
    assert (tmp_path / "out" / "time_to_quality_quick_16px.png").stat().st_size > 1000
    # a rerun with more images per caption reuses the cached decoder instead of training it again
    capsys.readouterr()
    again = ttq.main(["--quick", "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out2"),
                      "--images-per-caption", "2"])
    assert "reusing the toy decoder" in capsys.readouterr().out
    assert size["num_images"] == 18 and again["sizes"]["16"]["num_images"] == 36

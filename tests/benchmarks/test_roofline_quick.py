"""benchmarks/roofline.py and benchmarks/decoder_ab.py in --quick mode: they run and their counts agree."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark as load



@pytest.mark.slow
def test_roofline_quick_counts_conv_flops_like_the_flop_counter(tmp_path):
    roofline = load("roofline")
    r = roofline.main(["--quick", "--threads", "1", "--json-out", str(tmp_path / "r.json"),
                       "--markdown-out", str(tmp_path / "r.md")])
    # the hooked conv shapes, counted by hand, are the convolutions the flop counter saw in the step
    assert r["convs"]["fwd_bwd_flops"] == pytest.approx(r["profile"]["flops"]["conv"], rel=1e-6)
    assert r["profile"]["self_seconds"]["conv"] > 0 and r["step"]["optimizer_cpu_s"] > 0
    assert r["gemm_fp32_gflops_per_cpu_s"] > 0 and r["bandwidth_gb_per_cpu_s"] > 0
    text = (tmp_path / "r.md").read_text()
    for cls in (*roofline.CLASSES, "optimizer (AdamW.step)", "**whole step**"):
        assert f"| {cls} |" in text
    assert json.loads((tmp_path / "r.json").read_text())["quick"] is True


def test_roofline_op_classes():
    op_class = load("roofline").op_class
    assert op_class("aten::convolution_backward") == "conv"
    assert op_class("aten::native_group_norm_backward") == "norm_film_silu"
    assert op_class("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_class("aten::addmm") == "linear"
    assert op_class("aten::cat") == "other"


def test_conv_flops_hand_count():
    conv_flops = load("roofline").conv_flops
    # 3x3 same-padding conv: 2 * batch * cout * h * w * cin * 9
    assert conv_flops((2, 4, 8, 8), (6, 4, 3, 3), (1, 1), (1, 1)) == 2 * 2 * 6 * 64 * 4 * 9
    # 2x2 stride-2 downsample halves each side
    assert conv_flops((1, 4, 8, 8), (8, 4, 2, 2), (2, 2), (0, 0)) == 2 * 8 * 16 * 4 * 4


@pytest.mark.slow
def test_decoder_ab_quick_compares_variants_with_the_baseline(tmp_path):
    variants = ["baseline", "channels_last", "bf16+channels_last", "adamw_fused"]
    out = load("decoder_ab").main(["--quick", "--threads", "1", "--rounds", "2",
                                   "--json-out", str(tmp_path / "ab.json"), "--variants", *variants])
    assert out["baseline"]["speedup_cpu"] == 1.0
    assert all(out[v]["cpu_s_median"] > 0 and out[v]["compile_wall_s_est"] >= 0 for v in out)
    saved = json.loads((tmp_path / "ab.json").read_text())
    assert set(saved["variants"]) == set(variants) and saved["workload"] == "decoder_train"


def test_decoder_ab_builds_each_feature_and_the_prior_workload():
    ab = load("decoder_ab")
    assert ab.features("baseline") == set() and ab.features("bf16_autocast+compile") == {"bf16", "compile"}
    with pytest.raises(Exception, match="unknown feature"):
        ab.features("bf16+turbo")
    model, unet, _ = ab.build_model("decoder_train", {"channels_last", "keep_norm"}, quick=True)
    assert unet.config["channels_last"] is True and unet.config["recompute_norm_in_backward"] is False
    prior, net, loss = ab.build_model("prior_train", set(), quick=True)
    assert net is prior.net and loss().ndim == 0
    out = ab.main(["--quick", "--threads", "1", "--rounds", "1", "--workload", "prior_train",
                   "--variants", "baseline", "bf16"])
    assert set(out) == {"baseline", "bf16"}

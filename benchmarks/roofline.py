"""A roofline for the decoder training step: this CPU's real ceilings, and how close each op class gets.

Ceilings, all on ``--threads`` threads and reported per CPU-second (process CPU time, all threads), which a
shared machine disturbs far less than wall time:

* **FMA peak**: a tiny C loop of independent AVX-512 fused multiply-adds (fp32, and ``vdpbf16ps`` for bf16
  where the CPU has avx512_bf16), compiled with ``gcc`` if it is on PATH. It is the arithmetic limit of a core;
  no library can beat it, unlike the MKL matmul rate that ``matmul_ceiling.py`` used (MKL runs its AVX2 code
  on AMD CPUs, about half the peak, which is why the decoder step seemed to run "above the ceiling").
* **GEMM**: a large ``torch.mm`` in fp32 and bf16 (MKL / oneDNN).
* **Memory bandwidth**: ``torch.add`` of 64 Mi-element fp32 tensors (3 × 4 bytes per element moved).
* **The decoder's own convolutions**: every Conv2d call of one forward of the benchmark's decoder (collected
  with forward hooks), each shape run alone, forward and forward + backward; their call-weighted time is
  what the step's convolutions would cost if each ran as fast as it does in isolation.

The step (forward + backward of ``compare.py``'s ``decoder_train`` model and batch) is profiled with
``torch.profiler``; each aten op's self time goes to a class (conv, GroupNorm/FiLM/SiLU, attention, linear,
other elementwise/copies); FLOPs come from ``FlopCounterMode``; bytes of the elementwise classes from the op
input shapes. ``AdamW.step`` is timed on its own (28 bytes moved per parameter).
Run: ``python benchmarks/roofline.py [--quick] [--threads 2] [--json-out F] [--markdown-out F]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import decoder_kwargs, sizes_for, unet_kwargs  # noqa: E402

_FMA_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void) {
  __m512 acc[12]; __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
#ifdef BF16
  __m512bh p = (__m512bh)_mm512_set1_epi16(0x3f80), q = (__m512bh)_mm512_set1_epi16(0x3f80);
#endif
  for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
  long iters = ITERS; struct timespec t0, t1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
  for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
#ifdef BF16
      acc[i] = _mm512_dpbf16_ps(acc[i], p, q);
#else
      acc[i] = _mm512_fmadd_ps(acc[i], a, b);
#endif
    }
  }
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  float sum = 0; for (int i = 0; i < 12; i++) sum += _mm512_reduce_add_ps(acc[i]);
#ifdef BF16
  double flops = iters * 12.0 * 32 * 2;
#else
  double flops = iters * 12.0 * 16 * 2;
#endif
  printf("%f %f\n", flops / s / 1e9, sum);
  return 0;
}
"""

CLASSES = ("conv", "norm_film_silu", "attention", "linear", "other")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def fma_peak_per_core(bf16: bool, iters: int) -> float | None:
    """GFLOP per CPU-second of one core running independent AVX-512 FMAs (None without gcc / AVX-512)."""
    flags = cpu_flags()
    if shutil.which("gcc") is None or "avx512f" not in flags or (bf16 and "avx512_bf16" not in flags):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp, "fma.c"), Path(tmp, "fma")
        src.write_text(_FMA_C.replace("ITERS", str(iters)))
        cmd = ["gcc", "-O2", "-mavx512f", "-o", str(exe), str(src)]
        if bf16:
            cmd[2:2] = ["-DBF16", "-mavx512bf16"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        runs = [float(subprocess.run([str(exe)], capture_output=True, text=True).stdout.split()[0]) for _ in range(3)]
    return max(runs)


def cpu_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``fn`` after one warm-up call."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def gemm_rate(n: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    cpu, _ = cpu_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * n ** 3 / cpu / 1e9


def bandwidth(numel: int, repeats: int) -> float:
    """GB per CPU-second of an out-of-cache fp32 add (read two, write one)."""
    a, b, c = torch.randn(numel), torch.randn(numel), torch.empty(numel)
    cpu, _ = cpu_seconds(lambda: torch.add(a, b, out=c), repeats)
    return 3 * 4 * numel / cpu / 1e9


def build_step(quick: bool):
    from dalle2_pytorch.decoder import Decoder, Unet

    s = sizes_for(quick)
    torch.manual_seed(0)
    decoder = Decoder(unet=Unet(**unet_kwargs(s)), **decoder_kwargs(s)).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    images = torch.rand(s.decoder_batch, 3, s.image_size, s.image_size)
    embeds = F.normalize(torch.randn(s.decoder_batch, s.image_embed_dim), dim=-1)
    return decoder, optimizer, (lambda: decoder(images, image_embed=embeds.clone(), unet_number=1))


def conv_shapes(decoder, forward) -> Counter:
    """(input shape, weight shape, stride, padding, input needs grad) of every Conv2d call of one forward."""
    calls: Counter = Counter()

    def hook(module, inputs, _output):
        x = inputs[0]
        calls[(tuple(x.shape), tuple(module.weight.shape), module.stride, module.padding, x.requires_grad)] += 1

    handles = [m.register_forward_hook(hook) for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    forward()
    for h in handles:
        h.remove()
    return calls


def conv_flops(x_shape, w_shape, stride, padding) -> int:
    n, _, h, w = x_shape
    cout, cin, kh, kw = w_shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    return 2 * n * cout * ho * wo * cin * kh * kw


def measure_convs(calls: Counter, repeats: int) -> dict:
    """Isolated forward and forward + backward CPU time of each distinct conv, weighted by its calls."""
    rows, fwd_total, step_total, flops_total = [], 0.0, 0.0, 0
    for (xs, ws, stride, padding, x_grad), count in sorted(calls.items(), key=lambda kv: -conv_flops(*kv[0][:4])):
        x = torch.randn(xs, requires_grad=x_grad)
        w = torch.randn(ws, requires_grad=True)
        bias = torch.randn(ws[0], requires_grad=True)
        y = F.conv2d(x, w, bias, stride, padding)
        g = torch.randn_like(y)
        fwd, _ = cpu_seconds(lambda: F.conv2d(x.detach(), w.detach(), bias.detach(), stride, padding), repeats)
        both, _ = cpu_seconds(lambda: F.conv2d(x, w, bias, stride, padding).backward(g), repeats)
        flops = conv_flops(xs, ws, stride, padding)
        step_flops = flops * (3 if x_grad else 2)
        rows.append({"input": list(xs), "weight": list(ws), "stride": list(stride), "calls": count,
                     "fwd_gflops_per_cpu_s": flops / fwd / 1e9, "fwd_bwd_gflops_per_cpu_s": step_flops / both / 1e9})
        fwd_total += fwd * count
        step_total += both * count
        flops_total += step_flops * count
    return {"shapes": rows, "isolated_fwd_bwd_cpu_s": step_total, "isolated_fwd_cpu_s": fwd_total,
            "fwd_bwd_flops": flops_total, "isolated_gflops_per_cpu_s": flops_total / step_total / 1e9}


def op_class(name: str) -> str:
    n = name.lower()
    if "conv" in n:
        return "conv"
    if any(k in n for k in ("group_norm", "silu", "addcmul")):
        return "norm_film_silu"
    if any(k in n for k in ("scaled_dot_product", "softmax", "bmm", "layer_norm", "var_mean", "rsqrt")):
        return "attention"
    if n in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"):
        return "linear"
    return "other"


def _flop_class(op: str) -> str:
    if "convolution" in op:
        return "conv"
    if any(k in op for k in ("bmm", "scaled_dot_product", "baddbmm")):
        return "attention"
    return "linear"


def profile_step(forward, repeats: int) -> dict:
    """Self CPU time (per step) and input bytes of each op class over forward + backward."""
    from torch.profiler import ProfilerActivity, profile

    forward().backward()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            forward().backward()
    times: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    bytes_moved: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages(group_by_input_shape=True):
        cls = op_class(evt.key)
        times[cls] += evt.self_cpu_time_total / 1e6 / repeats
        by_op[evt.key] += evt.self_cpu_time_total / 1e6 / repeats
        numels = [math.prod(shape) for shape in (evt.input_shapes or []) if isinstance(shape, (list, tuple)) and shape]
        if numels and evt.self_cpu_time_total > 0:
            # inputs read plus one output the size of the largest input, fp32
            bytes_moved[cls] += 4 * (sum(numels) + max(numels)) * evt.count / repeats
    counter = FlopCounterMode(display=False)
    with counter:
        forward().backward()
    flops: dict[str, float] = defaultdict(float)
    for op, count in counter.get_flop_counts().get("Global", {}).items():
        flops[_flop_class(str(op))] += count
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:15]
    return {"self_seconds": dict(times), "top_ops": [[k, op_class(k), round(v, 4)] for k, v in top],
            "bytes": dict(bytes_moved), "flops": dict(flops),
            "total_flops": counter.get_total_flops()}


def measure_step(forward, optimizer, repeats: int) -> dict:
    def full():
        forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_cpu, step_wall = cpu_seconds(full, repeats)
    forward().backward()
    opt_cpu, _ = cpu_seconds(optimizer.step, repeats)
    optimizer.zero_grad(set_to_none=True)
    params = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    return {"step_cpu_s": step_cpu, "step_wall_s": step_wall, "optimizer_cpu_s": opt_cpu,
            "optimizer_bytes": 28 * params, "parameters": params}


def run(quick: bool, threads: int) -> dict:
    torch.set_num_threads(threads)
    repeats = 2 if quick else 5
    iters = 2_000_000 if quick else 100_000_000
    fp32_core, bf16_core = fma_peak_per_core(False, iters), fma_peak_per_core(True, iters)
    decoder, optimizer, forward = build_step(quick)
    calls = conv_shapes(decoder, forward)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "threads": threads, "quick": quick, "load_average_start": os.getloadavg(),
        "fma_fp32_gflops_per_core": fp32_core, "fma_bf16_gflops_per_core": bf16_core,
        "gemm_fp32_gflops_per_cpu_s": gemm_rate(256 if quick else 2048, torch.float32, repeats),
        "gemm_bf16_gflops_per_cpu_s": gemm_rate(256 if quick else 2048, torch.bfloat16, repeats),
        "bandwidth_gb_per_cpu_s": bandwidth(1 << (20 if quick else 26), repeats),
        "convs": measure_convs(calls, repeats),
        "profile": profile_step(forward, 1 if quick else 3),
        "step": measure_step(forward, optimizer, repeats),
    }
    result["load_average_end"] = os.getloadavg()
    return result


def table(r: dict) -> str:
    """Markdown roofline table: per op class, CPU seconds, share, achieved rate and fraction of its ceiling."""
    prof, step, convs = r["profile"], r["step"], r["convs"]
    fp32_peak = r["fma_fp32_gflops_per_core"] or r["gemm_fp32_gflops_per_cpu_s"]
    bw = r["bandwidth_gb_per_cpu_s"]
    # profiler self times are wall-clock per op on the calling thread; scale them to the step's CPU seconds
    fb_wall = sum(prof["self_seconds"].values())
    scale = (step["step_cpu_s"] - step["optimizer_cpu_s"]) / fb_wall
    lines = ["| op class | CPU s/step | share | GFLOP/step | achieved GFLOP per CPU-s | of fp32 FMA peak "
             "| GB/step (est.) | achieved GB per CPU-s | of add bandwidth |", "|---|---|---|---|---|---|---|---|---|"]
    total = step["step_cpu_s"]
    for cls in CLASSES:
        secs = prof["self_seconds"].get(cls, 0.0) * scale
        gflop = prof["flops"].get(cls, 0.0) / 1e9
        gb = prof["bytes"].get(cls, 0.0) / 1e9
        rate = gflop / secs if secs and gflop else None
        achieved = "- | -" if rate is None else f"{rate:.1f} | {rate / fp32_peak:.0%}"
        lines.append(f"| {cls} | {secs:.3f} | {secs / total:.1%} | {gflop:.1f} | {achieved} | "
                     f"{gb:.2f} | {gb / secs if secs else 0:.1f} | {gb / secs / bw if secs else 0:.0%} |")
    opt = step["optimizer_cpu_s"]
    ogb = step["optimizer_bytes"] / 1e9
    lines.append(f"| optimizer (AdamW.step) | {opt:.3f} | {opt / total:.1%} | - | - | - | {ogb:.2f} | "
                 f"{ogb / opt:.1f} | {ogb / opt / bw:.0%} |")
    all_gflop = prof["total_flops"] / 1e9
    lines.append(f"| **whole step** | {total:.3f} | 100% | {all_gflop:.1f} | {all_gflop / total:.1f} | "
                 f"{all_gflop / total / fp32_peak:.0%} | | | |")
    conv_secs = prof["self_seconds"].get("conv", 0.0) * scale
    lines += ["", f"Convolutions run alone (same shapes and call counts, forward + backward): "
                  f"{convs['isolated_fwd_bwd_cpu_s']:.3f} CPU s = {convs['isolated_gflops_per_cpu_s']:.1f} GFLOP per "
                  f"CPU-s ({convs['isolated_gflops_per_cpu_s'] / fp32_peak:.0%} of the FMA peak); inside the step "
                  f"they take {conv_secs:.3f} CPU s ({convs['isolated_fwd_bwd_cpu_s'] / conv_secs:.0%} of that speed)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (numbers mean nothing)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as compare.py)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--markdown-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    r = run(args.quick, args.threads)
    ceilings = (f"FMA peak per core: fp32 {r['fma_fp32_gflops_per_core'] or float('nan'):.1f}, bf16 "
                f"{r['fma_bf16_gflops_per_core'] or float('nan'):.1f} GFLOP per CPU-s; GEMM 2048: fp32 "
                f"{r['gemm_fp32_gflops_per_cpu_s']:.1f}, bf16 {r['gemm_bf16_gflops_per_cpu_s']:.1f}; "
                f"add bandwidth {r['bandwidth_gb_per_cpu_s']:.1f} GB per CPU-s "
                f"({r['threads']} threads, load {r['load_average_start'][0]:.1f})")
    text = ceilings + "\n\n" + table(r)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(r, indent=1))
    if args.markdown_out is not None:
        args.markdown_out.write_text(text + "\n")
    return r


if __name__ == "__main__":
    main()

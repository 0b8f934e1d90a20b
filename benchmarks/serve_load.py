"""Loopback load test of `dalle2 serve`: requests/s and p50/p95 latency, batching on and off.

    .venv/bin/python benchmarks/serve_load.py                      # built-in small random DALLE2
    .venv/bin/python benchmarks/serve_load.py --checkpoint outputs/checkpoints --json-out load.json
    .venv/bin/python benchmarks/serve_load.py --demo small --threads 1   # the trained toy demo, its defaults
    .venv/bin/python benchmarks/serve_load.py --quick                    # seconds-long smoke test

The app runs under uvicorn on 127.0.0.1 (a free port) in this process; 1, 4 and 16 client threads
each send ``POST /v1/generate`` (one image, its own seed) and follow the job's event stream until it
is done, back to back.  ``--demo PRESET`` serves the `dalle2 demo` pipeline of that preset at its saved sampling
defaults, trained into ``--demo-dir`` (git-ignored ``benchmarks/_work/serve_demo/<preset>``) unless a run there
can be reused.  Latency is submit -> done event; each cell is bounded by ``--requests-per-client``
and ``--seconds``.  "batching on" = up to ``--max-batch`` images per forward pass within a
``--window`` second window; "off" = one image per forward pass.  Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 4, 16)


def builtin_engine(image_size: int, steps: int):
    """A random-weight DALLE2 (CLIP 32-d, 2-layer prior, two unets up to ``image_size`` px), few sampling steps."""
    from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
    from dalle2_pytorch.clip.model import CLIP
    from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.decoder import Decoder, Unet
    from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
    from dalle2_pytorch.prior.network import DiffusionPriorNetwork
    from dalle2_pytorch.serve.engine import DALLE2Engine

    torch.manual_seed(0)
    clip = CLIP(dim_text=32, dim_image=32, dim_latent=32, num_text_tokens=VOCAB_SIZE, text_enc_depth=1,
                text_seq_len=16, text_heads=2, text_dim_head=16, visual_enc_depth=1, visual_heads=2,
                visual_dim_head=16, visual_image_size=image_size, visual_patch_size=8, visual_patch_dropout=0.0)
    adapter = BuiltinClipAdapter(clip)
    prior = DiffusionPrior(DiffusionPriorNetwork(32, depth=2, dim_head=16, heads=2, max_text_len=16), clip=adapter,
                           timesteps=100, cond_drop_prob=0.2, condition_on_text_encodings=False)
    unets = [Unet(dim=16, image_embed_dim=32, cond_dim=16, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=2,
                  attn_dim_head=16) for _ in range(2)]
    decoder = Decoder(unet=tuple(unets), clip=adapter, image_sizes=(image_size // 2, image_size), timesteps=100,
                      image_cond_drop_prob=0.1, text_cond_drop_prob=0.0)
    defaults = {"prior": {"steps": steps, "sampler": "ddim", "cond_scale": 1.0},
                "decoder": {"steps": [steps, steps], "sampler": "ddim", "cond_scale": [2.0, 1.0]}}
    return DALLE2Engine(DALLE2(prior=prior, decoder=decoder), defaults=defaults)


def demo_checkpoint(preset: str, directory: Path) -> Path:
    """The pipeline folder of `dalle2 demo --preset PRESET --out DIRECTORY`, trained now unless reusable."""
    from dalle2_pytorch.runs.demo import run_demo

    run_demo(preset, directory, threads=torch.get_num_threads())  # reuses every stage whose config is unchanged
    return directory / "checkpoints"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningServer:
    """uvicorn serving ``create_app(engine, ...)`` on a loopback port in a background thread."""

    def __init__(self, engine, *, max_batch: int, window: float, max_queue: int) -> None:
        import uvicorn

        from dalle2_pytorch.serve.app import create_app

        self.app = create_app(engine, max_batch=max_batch, batch_window=window, max_queue=max_queue)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def one_request(client, url: str, seed: int) -> float:
    """Seconds from POST to the job's done event."""
    started = time.perf_counter()
    response = client.post(f"{url}/v1/generate", json={"prompt": f"a red circle number {seed}", "seed": seed})
    response.raise_for_status()
    with client.stream("GET", url + response.json()["events_url"]) as events:
        for line in events.iter_lines():
            if line == "event: done":
                return time.perf_counter() - started
            if line == "event: failed":
                raise RuntimeError(f"job failed: {line}")
    raise RuntimeError("event stream ended without a done event")


def measure(url: str, clients: int, requests_per_client: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=120) as client:
            for k in range(requests_per_client):
                if time.monotonic() > deadline:
                    return
                latency = one_request(client, url, seed=index * 1000 + k)
                with lock:
                    latencies.append(latency)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()
    return {"clients": clients, "load_avg_1min_after": round(os.getloadavg()[0], 2), "requests": len(latencies),
            "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 2),
            # CPU of the whole process (server, model, clients) per request: what a quiet machine's wall time nears
            "cpu_s_per_request": round(cpu / max(1, len(latencies)), 3),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="serve this checkpoint instead of the built-in random model")
    parser.add_argument("--demo", choices=("small", "tiny"), help="serve the trained `dalle2 demo` pipeline of this "
                        "preset at its default settings (trained into --demo-dir unless one there is reusable)")
    parser.add_argument("--demo-dir", type=Path, help="where --demo trains or finds the demo run "
                        "(default benchmarks/_work/serve_demo/<preset>)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke test: a 16 px model (or --demo "
                        "tiny), 2 steps, 1 request per client, 1 and 3 clients, 1 thread")
    parser.add_argument("--image-size", type=int, default=32, help="built-in model's output size")
    parser.add_argument("--steps", type=int, default=10, help="built-in model's sampling steps per stage")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per cell")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window", type=float, default=0.02, help="batch window (s) with batching on")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    if args.checkpoint and args.demo:
        parser.error("give --checkpoint or --demo, not both")
    if args.quick:
        args.image_size, args.steps, args.requests_per_client, args.concurrency, args.threads = 16, 2, 1, [1, 3], 1

    torch.set_num_threads(args.threads)
    from dalle2_pytorch.serve.engine import DALLE2Engine, Settings

    if args.demo:
        demo_dir = args.demo_dir or Path(__file__).resolve().parent / "_work" / "serve_demo" / args.demo
        args.checkpoint = str(demo_checkpoint(args.demo, demo_dir))
    engine = DALLE2Engine.from_checkpoint(args.checkpoint) if args.checkpoint else \
        builtin_engine(args.image_size, args.steps)
    engine.generate(["warm up"], [0], Settings())
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    for mode, max_batch, window in (("on", args.max_batch, args.window), ("off", 1, 0.0)):
        with RunningServer(engine, max_batch=max_batch, window=window, max_queue=4 * max(args.concurrency)) as server:
            for clients in args.concurrency:
                passes_before = server.app.state.queue.forward_passes
                row = {"batching": mode, **measure(server.url, clients, args.requests_per_client, args.seconds)}
                row["images_per_forward_pass"] = round(
                    row["requests"] / max(1, server.app.state.queue.forward_passes - passes_before), 2)
                rows.append(row)
                print(json.dumps(row), flush=True)

    model = f"checkpoint {args.checkpoint}" if args.checkpoint else \
        f"built-in {args.image_size}px model, {args.steps} steps/stage"
    described = engine.describe()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, {args.threads} "
          f"thread(s), {os.cpu_count()} CPUs; {model} ({described['image_size']} px, defaults "
          f"{json.dumps(described['defaults'])}); load average {load_before} before the first cell")
    print("| batching | clients | requests | req/s | p50 latency (s) | p95 latency (s) | CPU-s / request | "
          "images / forward pass | load avg after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['requests_per_s']} | {r['p50_s']} | "
              f"{r['p95_s']} | {r['cpu_s_per_request']} | {r['images_per_forward_pass']} | "
              f"{r['load_avg_1min_after']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
             "cpus": os.cpu_count(), "model": described, "load_avg_1min_before": load_before, "rows": rows},
            indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

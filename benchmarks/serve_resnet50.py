"""Served resnet50 on a GPU (issue 7): throughput of ``trtjit serve`` with and without dynamic batching,
against direct engine calls, in one run.

    python benchmarks/serve_resnet50.py [--concurrency 64] [--client-procs 4] [--duration 20] [--json out.json]

Builds fp16 resnet50 engines (torchvision, random weights) for batch 1, 8 and 32 (cubins for the GPU's arch)
and times direct calls of the batch-1 and batch-32 engines (CUDA graphs). Then starts ``trtjit serve`` on
loopback with two models sharing those engines: ``resnet50_dynamic`` (dynamic batching, preferred batch 8 and
32, 2 instances) and ``resnet50_plain`` (each request runs alone, 2 instances), and drives each with
``--client-procs`` processes of asynchronous gRPC clients (tritonclient, one image per request). Every
response is checked against the batch-1 engine's output for its image (fp16 tolerance). Prints images/s and
request latency percentiles per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.serve_load import ServeProcess, run_load, scrape  # noqa: E402

BATCHES = (1, 8, 32)
SIZE, DEVICE = 224, "cuda"


def _smoke_model():
    """A tiny CNN for a CPU dry run of this script (``--smoke``)."""
    import torch
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def build(root: Path, pool_size: int, smoke: bool) -> tuple[list[dict], list[np.ndarray], list[np.ndarray]]:
    import torch

    import trtjit
    from benchmarks.models import randomize

    torch.manual_seed(0)
    global SIZE, DEVICE
    if smoke:
        SIZE, DEVICE, targets = 16, "cpu", []
        model = randomize(_smoke_model()).eval().half()
    else:
        import torchvision
        cap = torch.cuda.get_device_capability()
        targets = [f"sm_{cap[0]}{cap[1]}"]
        model = randomize(torchvision.models.resnet50()).eval().cuda().half()
    rows, engines = [], {}
    for b in BATCHES:
        t0 = time.perf_counter()
        x = torch.randn(b, 3, SIZE, SIZE, device=DEVICE, dtype=torch.float16)
        engines[b] = trtjit.compile(model, (x,), targets=targets)
        print(f"built batch {b} in {time.perf_counter() - t0:.1f} s", flush=True)
        for name in ("resnet50_dynamic", "resnet50_plain"):
            d = root / name / "1"
            d.mkdir(parents=True, exist_ok=True)
            engines[b].save(str(d / ("model.plan" if b == BATCHES[-1] else f"batch{b}.plan")))
    for b in (1, BATCHES[-1]):  # direct calls: CUDA-graph replay, inputs already on the GPU
        x = torch.randn(b, 3, SIZE, SIZE, device=DEVICE, dtype=torch.float16)
        with torch.no_grad():
            for _ in range(10):
                engines[b](x)
            sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
            sync()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 3.0:
                engines[b](x)
                n += 1
            sync()
        dt = time.perf_counter() - t0
        rows.append({"mode": f"direct engine call, batch {b}", "images_s": n * b / dt, "ms": dt / n * 1e3})
    rng = np.random.default_rng(1)
    pool = [rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float16) for _ in range(pool_size)]
    with torch.no_grad():
        refs = [engines[1](torch.from_numpy(p).to(DEVICE)).float().cpu().numpy() for p in pool]
    top = BATCHES[-1]
    cfg = {"resnet50_dynamic": {"max_batch_size": top, "instance_count": 2, "warmup": True,
                                "dynamic_batching": {"preferred_batch_size": list(BATCHES[1:]),
                                                     "max_queue_delay_microseconds": 2000}},
           "resnet50_plain": {"max_batch_size": top, "instance_count": 2, "warmup": True}}
    for name, c in cfg.items():
        (root / name / "config.json").write_text(json.dumps(c))
    return rows, pool, refs, engines[1].input_names[0]


def _client(args: tuple) -> dict:
    url, model, concurrency, duration, requests, pool, refs, seed, input_name = args
    keyed = {p.tobytes(): r for p, r in zip(pool, refs)}

    def check(x: np.ndarray, y: np.ndarray) -> bool:
        ref = keyed[x.tobytes()]
        return float(np.abs(y.astype(np.float32) - ref).max() / max(np.abs(ref).max(), 1e-30)) < 2e-2

    r = asyncio.run(run_load(url, model, protocol="grpc", concurrency=concurrency, requests=requests,
                             duration=duration, pool=pool[seed:] + pool[:seed], check=check, request_timeout=60,
                             input_name=input_name))
    return {"sent": r.sent, "ok": r.ok, "wrong": r.wrong, "errors": r.errors[:3], "lat": r.latencies_ms,
            "wall": r.wall_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=64, help="concurrent requests in all")
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per model")
    p.add_argument("--requests", type=int, default=200000, help="an upper bound per model")
    p.add_argument("--batches", default="1,8,32", help="engine batch sizes; the largest is max_batch_size")
    p.add_argument("--json", default=None)
    p.add_argument("--smoke", action="store_true", help="a tiny CNN on the CPU (interpreter): checks this script only")
    a = p.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="trtjit-serve-r50-")
    root = Path(tmp.name)
    global BATCHES
    BATCHES = tuple(sorted(int(b) for b in a.batches.split(",")))
    rows, pool, refs, input_name = build(root, 16, a.smoke)
    server = ServeProcess(root)
    lost = 0
    try:
        for model in ("resnet50_plain", "resnet50_dynamic"):
            before = scrape(server.metrics_url)
            per = max(1, a.concurrency // a.client_procs)
            jobs = [(server.grpc_url, model, per, a.duration, a.requests // a.client_procs, pool, refs, i, input_name)
                    for i in range(a.client_procs)]
            t0 = time.perf_counter()
            with mp.get_context("spawn").Pool(a.client_procs) as workers:
                parts = workers.map(_client, jobs)
            wall = time.perf_counter() - t0
            after = scrape(server.metrics_url)
            execs = after.get(("nv_inference_exec_count", model), 0) - before.get(("nv_inference_exec_count", model), 0)
            ok = sum(q["ok"] for q in parts)
            sent = sum(q["sent"] for q in parts)
            lat = np.concatenate([np.asarray(q["lat"]) for q in parts]) if ok else np.zeros(1)
            span = max(q["wall"] for q in parts)
            lost += sent - ok
            rows.append({"mode": f"served {model} (gRPC, {a.client_procs}x{per} clients)", "images_s": ok / span,
                         "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                         "sent": sent, "ok": ok, "wrong": sum(q["wrong"] for q in parts),
                         "errors": [e for q in parts for e in q["errors"]][:3], "execs": execs,
                         "mean_batch": ok / execs if execs else None, "wall_s": wall})
            print(json.dumps({k: v for k, v in rows[-1].items()}), flush=True)
    finally:
        code, out = server.stop()
        if code != 0:
            print(out[-3000:])
        tmp.cleanup()
    print("\n| mode | images/s | latency p50 ms | p99 ms | mean batch |\n|---|---|---|---|---|")
    for r in rows:
        p50 = f"{r['p50_ms']:.1f}" if "p50_ms" in r else f"{r['ms']:.2f} (per call)"
        p99 = f"{r['p99_ms']:.1f}" if "p99_ms" in r else ""
        mb = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else ""
        print(f"| {r['mode']} | {r['images_s']:.0f} | {p50} | {p99} | {mb} |")
    print("no request lost" if lost == 0 else f"{lost} request(s) lost or wrong")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

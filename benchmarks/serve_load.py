"""Bounded load test of ``trtjit serve`` over loopback: many concurrent tritonclient clients, a fixed
request count and a time limit; reports throughput and p50/p99 latency with and without dynamic batching,
and checks that no request was lost (every one answered, correctly, and counted by the server).

    python benchmarks/serve_load.py                       # builds a tiny MLP repository, starts `trtjit serve`
    python benchmarks/serve_load.py --concurrency 32 --requests 2000 --duration 60 --protocol grpc
    python benchmarks/serve_load.py --url 127.0.0.1:8000 --metrics-url http://127.0.0.1:8002/metrics \\
        --models mymodel                                  # an already running server (loopback only)

Only loopback addresses are accepted as targets. Under the Triton interpreter (no GPU) the numbers
measure the server's overheads and the batcher, not GPU kernels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_loopback(url: str) -> None:
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"serve_load: refusing to send load to {host!r}; only loopback addresses are allowed")


# ---------------------------------------------------------------------------------------------- repository
def make_model(seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()


def make_repository(root: str | Path, max_batch: int = 8, delay_us: int = 5000, instances: int = 2) -> Any:
    """``mlp_dynamic`` (dynamic batching) and ``mlp_plain`` (each request alone), one engine for
    ``max_batch`` shared by both; returns the torch module (the reference)."""
    import torch

    import trtjit

    model = make_model()
    engine = trtjit.compile(model, (torch.randn(max_batch, 16),))
    configs = {
        "mlp_dynamic": {"max_batch_size": max_batch, "instance_count": instances,
                        "dynamic_batching": {"preferred_batch_size": [max_batch],
                                             "max_queue_delay_microseconds": delay_us}},
        "mlp_plain": {"max_batch_size": max_batch, "instance_count": instances},
    }
    for name, cfg in configs.items():
        d = Path(root) / name
        (d / "1").mkdir(parents=True, exist_ok=True)
        engine.save(str(d / "1" / "model.plan"))
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return model


# ---------------------------------------------------------------------------------------------- load
@dataclass
class LoadResult:
    model: str
    protocol: str
    concurrency: int
    sent: int = 0
    ok: int = 0
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    execs: int | None = None
    server_success: int | None = None

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def lost(self) -> int:
        return self.sent - self.ok

    def row(self) -> str:
        batch = f"{self.ok / self.execs:.2f}" if self.execs else "-"
        return (f"{self.model:<14} {self.protocol:<5} {self.concurrency:>4} {self.sent:>6} {self.ok:>6} "
                f"{len(self.errors) + self.wrong:>4} {self.wall_s:>7.2f} {self.throughput:>8.1f} "
                f"{self.percentile(50):>8.1f} {self.percentile(99):>8.1f} {self.execs if self.execs is not None else '-':>6} "
                f"{batch:>6}")


HEADER = (f"{'model':<14} {'proto':<5} {'conc':>4} {'sent':>6} {'ok':>6} {'err':>4} {'wall_s':>7} {'req/s':>8} "
          f"{'p50_ms':>8} {'p99_ms':>8} {'execs':>6} {'batch':>6}")


def scrape(metrics_url: str) -> dict[tuple[str, str], float]:
    check_loopback(metrics_url)
    text = urlopen(metrics_url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(nv_\w+)\{model="([^"]+)",version="[^"]*"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = out.get((m.group(1), m.group(2)), 0.0) + float(m.group(3))
    return out


async def run_load(url: str, model: str, *, protocol: str = "http", concurrency: int = 16, requests: int = 200,
                   duration: float = 30.0, batch: int = 1, reference: Any = None, metrics_url: str | None = None,
                   input_name: str = "input", output_name: str = "output_0", features: int = 16,
                   seed: int = 0, request_timeout: float = 30.0, sample_shape: tuple[int, ...] | None = None,
                   dtype: Any = np.float32, check: Any = None, pool: list[np.ndarray] | None = None) -> LoadResult:
    """Send ``requests`` requests (or fewer if ``duration`` s pass) from ``concurrency`` concurrent clients;
    check each answer against ``reference`` (a torch module) when given, or with ``check(x, y) -> bool``.
    Each request holds ``batch`` random samples of ``sample_shape`` (default ``(features,)``) in ``dtype``,
    or the next array of ``pool``.
    A request unanswered after ``request_timeout`` s counts as lost, so the whole run ends by
    ``duration + request_timeout``."""
    check_loopback(url)
    if protocol == "http":
        import tritonclient.http as mod
        import tritonclient.http.aio as aio
        client = aio.InferenceServerClient(url, conn_limit=concurrency)
    else:
        import tritonclient.grpc as mod
        import tritonclient.grpc.aio as aio
        client = aio.InferenceServerClient(url)
    res = LoadResult(model, protocol, concurrency)
    before = scrape(metrics_url) if metrics_url else None
    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + duration

    async def worker() -> None:
        while res.sent < requests and time.monotonic() < deadline:
            res.sent += 1
            if pool is not None:
                x = pool[res.sent % len(pool)]
            else:
                x = rng.standard_normal((batch, *(sample_shape or (features,)))).astype(dtype)
            inp = mod.InferInput(input_name, list(x.shape), {np.float32: "FP32", np.float16: "FP16"}[x.dtype.type])
            inp.set_data_from_numpy(x)
            t0 = time.perf_counter()
            try:
                r = await asyncio.wait_for(client.infer(model, [inp]), request_timeout)
            except Exception as e:  # counted as lost; the message is reported
                res.errors.append(f"{type(e).__name__}: {e}")
                continue
            res.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            y = r.as_numpy(output_name)
            good = y is not None and y.shape[0] == x.shape[0]
            if good and check is not None:
                good = bool(check(x, y))
            elif good and reference is not None:
                import torch
                with torch.no_grad():
                    ref = reference(torch.from_numpy(x)).numpy()
                good = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30)) < 1e-4
            if good:
                res.ok += 1
            else:
                res.wrong += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        res.wall_s = time.perf_counter() - t0
        await client.close()
    if metrics_url:
        after = scrape(metrics_url)
        res.execs = int(after.get(("nv_inference_exec_count", model), 0) - before.get(("nv_inference_exec_count", model), 0))
        res.server_success = int(after.get(("nv_inference_request_success", model), 0)
                                 - before.get(("nv_inference_request_success", model), 0))
    return res


# ---------------------------------------------------------------------------------------------- server
class ServeProcess:
    """``python -m trtjit serve REPOSITORY`` on free loopback ports, stopped with SIGTERM."""

    def __init__(self, repository: str | Path, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "trtjit", "serve", str(repository), "--host", "127.0.0.1", "--http-port", "0",
               "--grpc-port", "0", "--metrics-port", "0", "--log-level", "warning", *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        end = time.monotonic() + 300
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("trtjit serve exited before it was ready:\n" + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"HTTP ([\d.]+):(\d+), gRPC [\d.]+:(\d+), metrics [\d.]+:(\d+)", line)
            if m:
                host = m.group(1)
                self.http_url, self.grpc_url = f"{host}:{m.group(2)}", f"{host}:{m.group(3)}"
                self.metrics_url = f"http://{host}:{m.group(4)}/metrics"
                return
        raise RuntimeError("trtjit serve did not report its ports in time")

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + (out or "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="host:port of a running server's HTTP (or gRPC with --protocol grpc) endpoint")
    p.add_argument("--metrics-url", help="its metrics URL (for the execution counts)")
    p.add_argument("--models", nargs="+", default=["mlp_plain", "mlp_dynamic"])
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=1000, help="requests per model (an upper bound)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per model (an upper bound)")
    p.add_argument("--batch", type=int, default=1, help="inferences per request (dim 0)")
    p.add_argument("--delay-us", type=int, default=5000, help="max queue delay of mlp_dynamic (own server only)")
    p.add_argument("--instances", type=int, default=2, help="instances per model (own server only)")
    a = p.parse_args(argv)
    server = None
    reference = None
    tmp = None
    if a.url is None:
        tmp = tempfile.TemporaryDirectory(prefix="trtjit-serve-load-")
        reference = make_repository(tmp.name, delay_us=a.delay_us, instances=a.instances)
        server = ServeProcess(tmp.name)
        a.url = server.http_url if a.protocol == "http" else server.grpc_url
        a.metrics_url = server.metrics_url
    print(f"load: {a.concurrency} concurrent {a.protocol} clients, at most {a.requests} requests / {a.duration:.0f} s "
          f"per model, batch {a.batch}, server {a.url} ({os.cpu_count()} CPUs)")
    print(HEADER)
    lost = 0
    try:
        for model in a.models:
            r = asyncio.run(run_load(a.url, model, protocol=a.protocol, concurrency=a.concurrency,
                                     requests=a.requests, duration=a.duration, batch=a.batch, reference=reference,
                                     metrics_url=a.metrics_url))
            print(r.row(), flush=True)
            lost += r.lost
            if r.errors:
                print(f"  {len(r.errors)} error(s), first: {r.errors[0]}")
            if r.server_success is not None and r.server_success != r.ok:
                print(f"  the server counted {r.server_success} successes, the clients {r.ok}")
                lost += 1
    finally:
        if server is not None:
            code, out = server.stop()
            if code != 0:
                print(out)
        if tmp is not None:
            tmp.cleanup()
    print("no request lost" if lost == 0 else f"{lost} request(s) lost or wrong")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""``trtjit serve``: its arguments (importing nothing heavy) and its entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", help="model repository: REPOSITORY/<model>/<version>/model.plan "
                                      "[+ REPOSITORY/<model>/config.json]")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=8000, help="KServe v2 HTTP port (0: any free, -1: off)")
    p.add_argument("--grpc-port", type=int, default=8001, help="KServe v2 gRPC port (0: any free, -1: off)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (0: any free, -1: off)")
    p.add_argument("--model-control-mode", choices=("none", "explicit"), default="none",
                   help="none: load every model at startup; explicit: only those given with --load-model "
                        "(the repository API loads and unloads models at run time in both modes)")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="model to load at startup in explicit mode (repeatable)")
    p.add_argument("--http-max-body-bytes", type=int, default=64 << 20,
                   help="largest request body (HTTP) or message (gRPC) accepted (default 64 MiB)")
    p.add_argument("--exit-timeout-secs", type=float, default=30.0,
                   help="on shutdown, how long to wait for requests in flight (default 30)")
    p.add_argument("--exit-on-error", action="store_true", help="exit if a model fails to load at startup")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


async def _serve(args: argparse.Namespace) -> int:
    from trtjit.serving.server import InferenceServer

    models = None if args.model_control_mode == "none" else list(args.load_model)
    server = InferenceServer(args.repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                             metrics_port=args.metrics_port, models=models, max_body_bytes=args.http_max_body_bytes,
                             exit_timeout=args.exit_timeout_secs, exit_on_error=args.exit_on_error)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as e:  # a port in use, an address that is not ours
        print(f"trtjit serve: error: cannot listen on {args.host}: {e}", file=sys.stderr)
        return 2
    print(server.describe(), flush=True)
    await stop.wait()
    print("trtjit serve: shutting down (finishing requests in flight)", flush=True)
    clean = await server.stop()
    print("trtjit serve: stopped" + ("" if clean else " (some requests were still in flight)"), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))

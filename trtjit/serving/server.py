"""The inference server: the model repository, the HTTP, gRPC and metrics endpoints on one event loop,
startup and graceful shutdown.

    server = InferenceServer("models/", http_port=8000, grpc_port=8001, metrics_port=8002)
    await server.start(); ...; await server.stop()

or, from synchronous code (tests, benchmarks, notebooks), ``with ServerThread("models/") as s: s.http_url``.
A port of 0 picks a free one (read it back from ``http_port`` etc.); a negative port turns that
endpoint off. Shutdown stops accepting requests, waits for those in flight (up to ``exit_timeout`` s),
then closes the endpoints and the model instances.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from trtjit.serving.core import InferenceCore
from trtjit.serving.errors import ServingError
from trtjit.serving.grpc_server import make_grpc_server
from trtjit.serving.http_server import HttpFrontend, metrics_app
from trtjit.serving.metrics import StatsTable, make_registry
from trtjit.serving.repository import ModelRepository

log = logging.getLogger("trtjit.serving")
DEFAULT_MAX_BODY = 64 << 20


class InferenceServer:
    def __init__(self, repository: str | Path, *, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, models: list[str] | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY, exit_timeout: float = 30.0,
                 exit_on_error: bool = False) -> None:
        self.stats = StatsTable()
        self.repository = ModelRepository(repository, self.stats)
        self.core = InferenceCore(self.repository)
        self.registry = make_registry(self.stats)
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.models = models
        self.max_body = max_body_bytes
        self.exit_timeout = exit_timeout
        self.exit_on_error = exit_on_error
        self.load_errors: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        self._grpc: Any = None
        self._stopped = False

    async def _site(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=self.exit_timeout)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # the bound port, for port 0

    async def start(self) -> None:
        names = self.repository.names() if self.models is None else list(self.models)
        for name in names:
            try:
                await self.core.load(name)
            except ServingError as e:
                self.load_errors[name] = str(e)
                log.error("model %s failed to load: %s", name, e)
                if self.exit_on_error:
                    raise
        try:
            if self.http_port >= 0:
                self.http_port = await self._site(HttpFrontend(self.core, self.max_body).app, self.http_port)
            if self.metrics_port >= 0:
                self.metrics_port = await self._site(metrics_app(self.registry), self.metrics_port)
            if self.grpc_port >= 0:
                self._grpc = make_grpc_server(self.core, self.max_body)
                self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
                if self.grpc_port == 0:
                    raise OSError(f"cannot bind gRPC to {self.host}:{self.grpc_port}")
                await self._grpc.start()
        except BaseException:
            await self.stop()
            raise
        self.core.accepting = True

    async def stop(self, timeout: float | None = None) -> bool:
        """Graceful shutdown; True when every request in flight finished."""
        if self._stopped:
            return True
        self._stopped = True
        timeout = self.exit_timeout if timeout is None else timeout
        clean = await self.core.drain(timeout)
        if not clean:
            log.warning("%d request(s) still in flight after %.1f s; stopping anyway", self.core.inflight, timeout)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        for runner in self._runners:
            await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, self.repository.close, timeout)
        self.core.close()
        return clean

    def describe(self) -> str:
        ep = []
        if self.http_port >= 0:
            ep.append(f"HTTP {self.host}:{self.http_port}")
        if self.grpc_port >= 0:
            ep.append(f"gRPC {self.host}:{self.grpc_port}")
        if self.metrics_port >= 0:
            ep.append(f"metrics {self.host}:{self.metrics_port}/metrics")
        lines = [f"trtjit serve: {', '.join(ep)}"]
        for m in self.repository.index():
            v = f" version {m['version']}" if m["version"] else ""
            lines.append(f"  model {m['name']}{v}: {m['state']}{' (' + m['reason'] + ')' if m['reason'] else ''}")
        return "\n".join(lines)


class ServerThread:
    """An InferenceServer on its own event loop in a background thread."""

    def __init__(self, repository: str | Path, **kwargs: Any) -> None:
        kwargs.setdefault("http_port", 0)
        kwargs.setdefault("grpc_port", 0)
        kwargs.setdefault("metrics_port", 0)
        self.server = InferenceServer(repository, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="trtjit-serve-loop", daemon=True)

    def start(self, timeout: float = 300.0) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout)
        return self

    def call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        if not self._thread.is_alive():
            return True
        try:
            return self.call(self.server.stop(timeout))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def http_url(self) -> str:
        return f"{self.server.host}:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.server.host}:{self.server.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.server.host}:{self.server.metrics_port}/metrics"

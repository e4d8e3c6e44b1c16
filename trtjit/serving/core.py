"""The protocol-independent server core used by the HTTP and gRPC frontends.

All methods run on the server's event loop thread. ``infer`` validates a decoded request against the
model, hands it to the model's scheduler (worker threads) and awaits the answer; it counts requests in
flight so that shutdown can wait for them.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from trtjit.serving.datatypes import datatype_of
from trtjit.serving.errors import ServingError, invalid, unavailable
from trtjit.serving.model import ModelVersion
from trtjit.serving.repository import ModelRepository

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics", "schedule_policy",
              "parameters"]
UNSUPPORTED_PARAMETERS = {"sequence_id": "sequence batching", "sequence_start": "sequence batching",
                          "sequence_end": "sequence batching"}


@dataclass
class InferResult:
    model_name: str
    model_version: str
    id: str
    outputs: list[tuple[str, str, list[int], torch.Tensor]]  # name, datatype, shape, tensor (CPU)


def _settle(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class InferenceCore:
    def __init__(self, repository: ModelRepository) -> None:
        import trtjit

        self.repo = repository
        self.stats = repository.stats
        self.version = trtjit.__version__
        self.accepting = False
        self._inflight = 0
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trtjit-serve-repo")

    # ------------------------------------------------------------------ health and metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.accepting

    @property
    def inflight(self) -> int:
        return self._inflight

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "trtjit", "version": self.version, "extensions": list(EXTENSIONS)}

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        return self.repo.resolve(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        m = self.repo.get(name)
        d = m.resolve(version).metadata()
        if not version:
            d["versions"] = [str(v) for v in sorted(m.versions)]
        return d

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.repo.resolve(name, version)
        except ServingError:
            return False
        return True

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return self.repo.resolve(name, version).config_json()

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if not name:
            return {"model_stats": [v.stats.to_json() for m in self.repo.loaded()
                                    for _, v in sorted(m.versions.items())]}
        m = self.repo.get(name)
        if version:
            return {"model_stats": [m.resolve(version).stats.to_json()]}
        return {"model_stats": [v.stats.to_json() for _, v in sorted(m.versions.items())]}

    # ------------------------------------------------------------------ repository (blocking work off the loop)
    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return self.repo.index(ready_only)

    async def load(self, name: str, config: str | None = None) -> None:
        await self._blocking(self.repo.load, name, config)

    async def load_request(self, name: str, params: dict[str, Any]) -> None:
        """The repository API's load, with its parameters as either protocol delivers them."""
        files = [k for k in params if k.startswith("file:")]
        if files:
            raise ServingError(f"loading models from files in the request ({files}) is not supported", "UNSUPPORTED")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise invalid("parameter 'config' must be a string holding the model configuration JSON")
        await self.load(name, config)

    async def unload(self, name: str) -> None:
        await self._blocking(self.repo.unload, name)

    # ------------------------------------------------------------------ inference
    async def infer(self, name: str, version: str, inputs: list[tuple[str, str, list[int], torch.Tensor]],
                    outputs: list[str] | None = None, request_id: str = "",
                    parameters: dict[str, Any] | None = None) -> InferResult:
        if not self.accepting:
            raise unavailable("the server is shutting down (or not started); no new requests are accepted")
        self._inflight += 1
        try:
            mv = self.repo.resolve(name, version)
            params = parameters or {}
            for key, what in UNSUPPORTED_PARAMETERS.items():
                if key in params:
                    raise ServingError(f"request parameter {key!r}: {what} is not supported", "UNSUPPORTED")
            timeout = params.get("timeout")
            if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)):
                raise invalid(f"request parameter 'timeout' must be an integer (microseconds), got {timeout!r}")
            loop = asyncio.get_running_loop()
            fut = loop.create_future()

            def done(value: Any) -> None:
                try:
                    loop.call_soon_threadsafe(_settle, fut, value)
                except RuntimeError:  # the event loop is closed: nobody waits for this answer any more
                    pass

            t0 = time.monotonic_ns()
            try:
                req = mv.make_request(inputs, outputs, timeout, done, fut.cancelled)
                mv.submit(req)
            except ServingError:
                mv.stats.record_failure(time.monotonic_ns() - t0)
                raise
            result = await fut
            if isinstance(result, BaseException):
                raise result
            outs = [(n, datatype_of(t.dtype), list(t.shape), t) for n, t in ((n, result[n]) for n in req.outputs)]
            return InferResult(mv.name, str(mv.version), request_id or "", outs)
        finally:
            self._inflight -= 1

    async def drain(self, timeout: float) -> bool:
        """Stop accepting requests and wait (up to ``timeout`` s) for those in flight; True when all finished."""
        self.accepting = False
        end = time.monotonic() + timeout
        while self._inflight and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return self._inflight == 0

    def close(self) -> None:
        self._executor.shutdown(wait=False)

"""trtjit.serving: a KServe v2 (Triton-compatible) inference server for trtjit engines.

``trtjit serve REPOSITORY`` serves every model of a repository over HTTP and gRPC, with dynamic
batching and Prometheus metrics; see ``trtjit/serving/server.py``. Needs the ``serve`` extra
(``pip install 'trtjit[serve]'``).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "InferenceServer": "trtjit.serving.server",
    "ServerThread": "trtjit.serving.server",
    "ModelRepository": "trtjit.serving.repository",
    "ModelConfig": "trtjit.serving.config",
    "ServingError": "trtjit.serving.errors",
}


def __getattr__(name: str) -> Any:  # lazy: `trtjit serve --help` must not need aiohttp or grpc
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trtjit.serving' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

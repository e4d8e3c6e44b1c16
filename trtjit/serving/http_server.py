"""The KServe v2 HTTP/REST frontend (aiohttp), with Triton's binary tensor data extension, and the
Prometheus metrics endpoint.

Binary tensor data: a request whose body is a JSON header followed by raw tensor bytes carries the
header's length in ``Inference-Header-Content-Length``; each input with ``parameters.binary_data_size``
takes its bytes from that tail, in input order. Outputs are returned as raw bytes the same way when
requested with ``parameters.binary_data`` (per output) or ``parameters.binary_data_output`` (per
request). Every error is answered as ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from trtjit.serving.core import InferenceCore
from trtjit.serving.datatypes import check_shape, from_bytes, from_json, to_bytes, to_json
from trtjit.serving.errors import ServingError, invalid
from trtjit.serving.metrics import render

log = logging.getLogger("trtjit.serving")
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_BODY = web.AppKey("max_body", int)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServingError as e:
        return error_response(e.http_status, str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        text = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 404:
            text = f"no such endpoint: {request.method} {request.path}"
        elif e.status == 405:
            text = f"method {request.method} is not allowed for {request.path}"
        elif e.status == 413:
            text = (f"request body exceeds the server's limit of {request.app[MAX_BODY]} bytes "
                    "(--http-max-body-bytes)")
        return error_response(e.status, text)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a bug: answer it, log it, keep serving
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, f"internal server error: {type(e).__name__}: {e}")


def _json_object(raw: bytes | memoryview, what: str, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not bytes(raw).strip():
        return {}
    try:
        d = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"malformed JSON in the {what}: {e}") from None
    if not isinstance(d, dict):
        raise invalid(f"the {what} must be a JSON object, got {type(d).__name__}")
    return d


class HttpFrontend:
    def __init__(self, core: InferenceCore, max_body_bytes: int) -> None:
        self.core = core
        self.max_body = max_body_bytes
        app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
        app[MAX_BODY] = max_body_bytes
        r = app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_post("/v2/repository/index", self.repo_index)
        r.add_post("/v2/repository/models/{model}/load", self.repo_load)
        r.add_post("/v2/repository/models/{model}/unload", self.repo_unload)
        r.add_get("/v2/models/stats", self.stats)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self.model_metadata)
            r.add_get(base + "/ready", self.model_ready)
            r.add_get(base + "/config", self.model_config)
            r.add_get(base + "/stats", self.stats)
            r.add_post(base + "/infer", self.infer)
        self.app = app

    # ------------------------------------------------------------------ health, metadata, repository
    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200) if self.core.live() else error_response(400, "server is not live")

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200) if self.core.ready() else error_response(400, "server is not ready")

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.server_metadata())

    @staticmethod
    def _mv(request: web.Request) -> tuple[str, str]:
        return request.match_info["model"], request.match_info.get("version", "")

    async def model_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.model_metadata(*self._mv(request)))

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = self._mv(request)
        self.core.repo.get(name)  # 404 for a model that is not loaded at all
        if self.core.model_ready(name, version):
            return web.Response(status=200)
        return error_response(400, f"model {name!r} version {version!r} is not ready")

    async def model_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.model_config(*self._mv(request)))

    async def stats(self, request: web.Request) -> web.Response:
        name = request.match_info.get("model", "")
        return web.json_response(self.core.statistics(name, request.match_info.get("version", "")))

    async def _small_body(self, request: web.Request, what: str) -> dict[str, Any]:
        return _json_object(await self._read(request), what, allow_empty=True)

    async def repo_index(self, request: web.Request) -> web.Response:
        body = await self._small_body(request, "repository index request")
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise invalid("'ready' must be true or false")
        return web.json_response(await self.core.index(ready))

    async def repo_load(self, request: web.Request) -> web.Response:
        body = await self._small_body(request, "load request")
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            raise invalid("'parameters' must be an object")
        await self.core.load_request(request.match_info["model"], params)
        return web.Response(status=200)

    async def repo_unload(self, request: web.Request) -> web.Response:
        await self._small_body(request, "unload request")
        await self.core.unload(request.match_info["model"])
        return web.Response(status=200)

    # ------------------------------------------------------------------ inference
    async def _read(self, request: web.Request) -> bytes:
        size = request.content_length
        if size is not None and size > self.max_body:
            raise ServingError(f"request body of {size} bytes exceeds the server's limit of {self.max_body} bytes "
                               "(--http-max-body-bytes)", "TOO_LARGE")
        return await request.read()  # aiohttp enforces client_max_size on bodies without a Content-Length

    async def infer(self, request: web.Request) -> web.Response:
        name, version = self._mv(request)
        self.core.resolve(name, version)  # unknown model or version: 404 before reading the body
        body = await self._read(request)
        hdr = request.headers.get(HEADER_LENGTH)
        if hdr is not None:
            try:
                hlen = int(hdr)
            except ValueError:
                raise invalid(f"{HEADER_LENGTH} must be an integer, got {hdr!r}") from None
            if not 0 <= hlen <= len(body):
                raise invalid(f"{HEADER_LENGTH} {hlen} is outside the request body of {len(body)} bytes")
        else:
            hlen = len(body)
        req = _json_object(memoryview(body)[:hlen], "inference request")
        binary = memoryview(body)[hlen:]
        params = req.get("parameters", {})
        if not isinstance(params, dict):
            raise invalid("request 'parameters' must be an object")
        inputs = self._inputs(req, binary)
        outputs, binary_flags = self._outputs(req, params)
        request_id = req.get("id", "")
        if not isinstance(request_id, str):
            raise invalid("request 'id' must be a string")
        result = await self.core.infer(name, version, inputs, outputs, request_id, params)
        default_binary = params.get("binary_data_output", False)
        resp: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
        if result.id:
            resp["id"] = result.id
        chunks, outs = [], []
        for oname, datatype, shape, t in result.outputs:
            o: dict[str, Any] = {"name": oname, "datatype": datatype, "shape": shape}
            if binary_flags.get(oname, default_binary):
                raw = to_bytes(t)
                o["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                o["data"] = to_json(t)
            outs.append(o)
        resp["outputs"] = outs
        head = json.dumps(resp).encode()
        if not chunks:
            out = web.Response(body=head, content_type="application/json")
        else:
            out = web.Response(body=head + b"".join(chunks), content_type="application/octet-stream",
                               headers={HEADER_LENGTH: str(len(head))})
        accept = request.headers.get("Accept-Encoding", "").lower()
        if "gzip" in accept or "deflate" in accept:
            out.enable_compression()  # the header length stays that of the uncompressed JSON, as clients expect
        return out

    @staticmethod
    def _inputs(req: dict[str, Any], binary: memoryview) -> list:
        items = req.get("inputs")
        if not isinstance(items, list) or not items:
            raise invalid("the inference request needs a non-empty 'inputs' list")
        out, off = [], 0
        for i, inp in enumerate(items):
            if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
                raise invalid(f"inputs[{i}] must be an object with a string 'name'")
            name = inp["name"]
            shape = check_shape(name, inp.get("shape"))
            datatype = inp.get("datatype")
            p = inp.get("parameters", {})
            if not isinstance(p, dict):
                raise invalid(f"input {name!r}: 'parameters' must be an object")
            if "shared_memory_region" in p:
                raise ServingError(f"input {name!r}: shared memory is not supported", "UNSUPPORTED")
            if "binary_data_size" in p:
                size = p["binary_data_size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise invalid(f"input {name!r}: 'binary_data_size' must be a non-negative integer")
                if "data" in inp:
                    raise invalid(f"input {name!r} has both 'data' and 'binary_data_size'")
                if off + size > len(binary):
                    raise invalid(f"input {name!r}: binary_data_size {size} runs past the end of the request's "
                                  f"binary data ({len(binary) - off} bytes left)")
                t = from_bytes(name, datatype, shape, binary[off:off + size])
                off += size
            elif "data" in inp:
                t = from_json(name, datatype, shape, inp["data"])
            else:
                raise invalid(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            out.append((name, datatype, shape, t))
        if off != len(binary):
            raise invalid(f"{len(binary) - off} bytes of binary data after the JSON header belong to no input")
        return out

    @staticmethod
    def _outputs(req: dict[str, Any], params: dict[str, Any]) -> tuple[list[str] | None, dict[str, bool]]:
        bdo = params.get("binary_data_output", False)
        if not isinstance(bdo, bool):
            raise invalid("request parameter 'binary_data_output' must be true or false")
        items = req.get("outputs")
        if items is None:
            return None, {}
        if not isinstance(items, list):
            raise invalid("'outputs' must be a list")
        names, flags = [], {}
        for i, o in enumerate(items):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise invalid(f"outputs[{i}] must be an object with a string 'name'")
            p = o.get("parameters", {})
            if not isinstance(p, dict):
                raise invalid(f"output {o['name']!r}: 'parameters' must be an object")
            if p.get("classification"):
                raise ServingError("the classification extension is not supported", "UNSUPPORTED")
            if "shared_memory_region" in p:
                raise ServingError(f"output {o['name']!r}: shared memory is not supported", "UNSUPPORTED")
            if "binary_data" in p:
                if not isinstance(p["binary_data"], bool):
                    raise invalid(f"output {o['name']!r}: 'binary_data' must be true or false")
                flags[o["name"]] = p["binary_data"]
            names.append(o["name"])
        return names, flags


def metrics_app(registry: Any) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(registry), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application(middlewares=[_errors])
    app[MAX_BODY] = 1 << 20
    app.router.add_get("/metrics", metrics)
    return app

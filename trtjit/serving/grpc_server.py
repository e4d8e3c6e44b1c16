"""The KServe v2 gRPC frontend: ``inference.GRPCInferenceService`` on grpc.aio, implemented with the
generated protobuf classes that tritonclient ships (``tritonclient.grpc.service_pb2``).

Inputs come either as ``raw_input_contents`` (one little-endian buffer per input, what tritonclient
sends) or as typed ``contents``; outputs always go back as ``raw_output_contents``. Errors become
gRPC status codes (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, RESOURCE_EXHAUSTED, UNIMPLEMENTED,
INTERNAL) with the message of the error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import grpc
import torch
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from trtjit.serving.core import InferenceCore, InferResult
from trtjit.serving.datatypes import check_datatype, check_shape, from_bytes, numel, to_bytes
from trtjit.serving.errors import ServingError, invalid

log = logging.getLogger("trtjit.serving")

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _guard(fn: Any) -> Any:
    """Turn ServingError (and bugs) into gRPC status codes."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except ServingError as e:
            await context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:
            log.exception("unhandled error in gRPC %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(e).__name__}: {e}")

    return wrapper


def decode_inputs(request: pb.ModelInferRequest) -> list[tuple[str, str, list[int], torch.Tensor]]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
                      "(give every input's data raw, or none)")
    if not request.inputs:
        raise invalid("the inference request has no inputs")
    out = []
    for i, inp in enumerate(request.inputs):
        name = inp.name
        shape = check_shape(name, list(inp.shape))
        if "shared_memory_region" in inp.parameters:
            raise ServingError(f"input {name!r}: shared memory is not supported", "UNSUPPORTED")
        if raw:
            t = from_bytes(name, inp.datatype, shape, raw[i])
        else:
            dtype = check_datatype(name, inp.datatype)
            field = _CONTENTS.get(inp.datatype)
            if field is None:
                raise invalid(f"input {name!r}: {inp.datatype} data must be sent in raw_input_contents")
            values = list(getattr(inp.contents, field))
            if len(values) != numel(shape):
                raise invalid(f"input {name!r}: {len(values)} elements in contents.{field} for shape {shape} "
                              f"(expected {numel(shape)})")
            try:
                t = torch.tensor(values, dtype=dtype).reshape(shape)
            except (RuntimeError, OverflowError) as e:
                raise invalid(f"input {name!r}: bad contents for {inp.datatype}: {e}") from None
        out.append((name, inp.datatype, shape, t))
    return out


def encode_result(result: InferResult) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=result.id)
    for name, datatype, shape, t in result.outputs:
        resp.outputs.add(name=name, datatype=datatype, shape=shape)
        resp.raw_output_contents.append(to_bytes(t))
    return resp


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    @_guard
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.core.live())

    @_guard
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.core.ready())

    @_guard
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    @_guard
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        d = self.core.server_metadata()
        return pb.ServerMetadataResponse(name=d["name"], version=d["version"], extensions=d["extensions"])

    @_guard
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        d = self.core.model_metadata(request.name, request.version)
        r = pb.ModelMetadataResponse(name=d["name"], versions=d["versions"], platform=d["platform"])
        for t in d["inputs"]:
            r.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        for t in d["outputs"]:
            r.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return r

    @_guard
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        d = self.core.model_config(request.name, request.version)
        cfg = json_format.ParseDict(d, mc.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=cfg)

    @_guard
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        d = self.core.statistics(request.name, request.version)
        return json_format.ParseDict(d, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    @_guard
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        r = pb.RepositoryIndexResponse()
        for m in await self.core.index(request.ready):
            r.models.add(**m)
        return r

    @_guard
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        params = {k: _param_value(v) for k, v in request.parameters.items()}
        await self.core.load_request(request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    @_guard
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self.core.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        self.core.resolve(request.model_name, request.model_version)
        params = {k: _param_value(v) for k, v in request.parameters.items()}
        for o in request.outputs:
            if "classification" in o.parameters and _param_value(o.parameters["classification"]):
                raise ServingError("the classification extension is not supported", "UNSUPPORTED")
            if "shared_memory_region" in o.parameters:
                raise ServingError(f"output {o.name!r}: shared memory is not supported", "UNSUPPORTED")
        outputs = [o.name for o in request.outputs] or None
        result = await self.core.infer(request.model_name, request.model_version, decode_inputs(request), outputs,
                                       request.id, params)
        return encode_result(result)

    @_guard
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._infer(request)

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
        """Bidirectional stream: every request is answered (in completion order) by a response or by
        ``error_message``; requests on one stream run concurrently, so they can be batched together."""
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def one(req: pb.ModelInferRequest) -> None:
            try:
                resp = pb.ModelStreamInferResponse(infer_response=await self._infer(req))
            except ServingError as e:
                resp = pb.ModelStreamInferResponse(
                    error_message=str(e), infer_response=pb.ModelInferResponse(
                        id=req.id, model_name=req.model_name, model_version=req.model_version))
            except Exception as e:
                log.exception("unhandled error in a gRPC stream request")
                resp = pb.ModelStreamInferResponse(error_message=f"internal server error: {type(e).__name__}: {e}")
            await answers.put(resp)

        async def read() -> None:
            try:
                async for req in request_iterator:
                    t = asyncio.ensure_future(one(req))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await answers.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            for t in list(tasks):
                t.cancel()


def make_grpc_server(core: InferenceCore, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max(max_message_bytes, 1 << 30)),
                                      ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(core), server)
    return server

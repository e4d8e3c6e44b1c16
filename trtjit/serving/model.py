"""A served model version: its engines (one set per instance), its tensor metadata, request validation
and batched execution.

Engines are built for fixed shapes. With ``max_batch_size`` > 0, dim 0 of every input and output of
an engine is the batch dimension; the version directory holds ``model.plan`` (the engine for the max
batch size) and may hold more ``*.plan`` engines of the same model for other batch sizes. A batch of
``n`` inferences runs on the smallest engine whose batch is >= ``n``: the inputs are padded up to that
batch (by repeating the last sample) and each request gets its own rows of the outputs back. Model
metadata and config report this (``engine_batch_sizes``, ``batch_padding``).

Engines are not thread-safe (one activation arena per device), so every instance loads its own Engine
objects and runs them from its own worker thread, on its own CUDA stream on a GPU. Under the Triton
interpreter (no GPU) kernel launches are serialized by one process-wide lock, because the interpreter
keeps its launch state in module globals; instances then overlap only their input and output work.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import trtjit
from trtjit.backend import interpreting
from trtjit.engine import Engine
from trtjit.serving.config import ModelConfig
from trtjit.serving.datatypes import config_type, datatype_of
from trtjit.serving.errors import ServingError, invalid, unavailable
from trtjit.serving.metrics import VersionStats
from trtjit.serving.scheduler import InferRequest, Scheduler

log = logging.getLogger("trtjit.serving")
PLATFORM = "trtjit_plan"
_INTERPRETER_LOCK = threading.Lock()


@dataclass
class TensorMeta:
    name: str
    datatype: str
    dims: tuple[int, ...]  # per-sample shape when batching, else the full shape

    def shape(self, batching: bool) -> list[int]:
        return [-1, *self.dims] if batching else list(self.dims)


class Instance:
    """One execution instance: its own engines (batch size -> Engine), device and CUDA stream."""

    def __init__(self, index: int, device: torch.device, engines: dict[int, Engine]) -> None:
        self.index = index
        self.device = device
        self.engines = engines
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def context(self) -> Any:
        if self.stream is not None:
            return torch.cuda.stream(self.stream)
        return _INTERPRETER_LOCK if interpreting() else nullcontext()

    def run(self, engine: Engine, args: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """Run on this instance's device; returns the outputs and when the run started (monotonic ns,
        after any wait for the interpreter lock)."""
        with self.context():
            start = time.monotonic_ns()
            if self.device.type == "cuda":
                args = [a.to(self.device, non_blocking=True) for a in args]
            outs = engine.run(*args)
            if self.stream is not None:
                self.stream.synchronize()
        return outs, start


def _devices(cfg: ModelConfig) -> list[torch.device]:
    gpu = torch.cuda.is_available() and not interpreting()
    out = []
    for g in cfg.instance_groups:
        for dev in (g.gpus or [None]):
            for _ in range(g.count):
                if gpu:
                    out.append(torch.device("cuda", torch.cuda.current_device() if dev is None else dev))
                else:
                    out.append(torch.device("cpu"))
    return out


class ModelVersion:
    def __init__(self, name: str, version: int, path: Path, config: ModelConfig, stats: VersionStats) -> None:
        self.name, self.version, self.path, self.config, self.stats = name, version, path, config, stats
        self.batching = config.max_batch_size > 0
        primary = path / config.default_model_filename
        if not primary.is_file():
            raise invalid(f"model {name!r} version {version}: no engine file {primary}")
        files = [primary] + sorted(p for p in path.glob("*.plan") if p.name != primary.name and p.is_file())
        if not self.batching and len(files) > 1:
            raise invalid(f"model {name!r} version {version}: several engine files ({[f.name for f in files]}) but "
                          "max_batch_size is 0; extra engines are for other batch sizes of a batched model")
        self.instances: list[Instance] = []
        for k, device in enumerate(_devices(config)):
            loaded = []
            for f in files:
                try:
                    loaded.append((f, trtjit.load(str(f))))
                except trtjit.TrtjitError as err:
                    raise invalid(f"model {name!r} version {version}: cannot load {f.name}: {err}") from None
            if k == 0:
                self._describe(loaded)
            engines = {(self._engine_batch(e, f) if self.batching else 0): e for f, e in loaded}
            self.instances.append(Instance(k, device, dict(sorted(engines.items()))))
        if self.batching:
            self.engine_batches = list(self.instances[0].engines)
            if len(self.engine_batches) != len(files):
                raise invalid(f"model {name!r} version {version}: two engine files have the same batch size "
                              f"({[f.name for f in files]})")
            if self.engine_batches[-1] < config.max_batch_size:
                raise invalid(f"model {name!r} version {version}: the largest engine is for batch "
                              f"{self.engine_batches[-1]}, less than max_batch_size {config.max_batch_size}; "
                              f"build {config.default_model_filename} for batch {config.max_batch_size}")
        else:
            self.engine_batches = []
        if config.warmup:
            self._warmup()
        self.scheduler = Scheduler(self, self.instances)

    # ------------------------------------------------------------------ loading
    def _engine_batch(self, e: Engine, f: Path) -> int:
        """The batch an engine file serves: dim 0 of its inputs and outputs; a dynamic-batch engine
        (trtjit.dynamic) counts as its max and runs every batch in its range unpadded."""
        specs = list(e.input_specs) + list(e.output_specs)
        if any(len(s.shape) == 0 for s in specs):
            raise invalid(f"model {self.name!r} version {self.version}: {f.name} has a scalar input or output, "
                          "so it has no batch dimension (set max_batch_size 0)")
        if e.batch_range is not None:
            from trtjit.dynamic import SymDim
            if not all(isinstance(s.shape[0], SymDim) and s.shape[0].coef == 1 for s in specs):
                raise invalid(f"model {self.name!r} version {self.version}: {f.name} has a batch range, but not "
                              "along dim 0 of every input and output (set max_batch_size 0)")
            return e.batch_range.max
        sizes = {s.shape[0] for s in specs}
        if len(sizes) != 1:
            raise invalid(f"model {self.name!r} version {self.version}: {f.name}'s inputs and outputs disagree on "
                          f"dim 0 ({sorted(sizes)}), so dim 0 is not a batch dimension (set max_batch_size 0)")
        return sizes.pop()

    def _describe(self, loaded: list[tuple[Path, Engine]]) -> None:
        cut = 1 if self.batching else 0
        files = [f for f, _ in loaded]
        first = loaded[0][1]
        names = self.config.output_names or [f"output_{i}" for i in range(len(first.output_specs))]
        if len(names) != len(first.output_specs):
            raise invalid(f"model {self.name!r}: the config names {len(names)} output(s) {names}, the engine has "
                          f"{len(first.output_specs)}")
        self.inputs = [TensorMeta(n, datatype_of(s.dtype), tuple(s.shape[cut:]))
                       for n, s in zip(first.input_names, first.input_specs)]
        self.outputs = [TensorMeta(n, datatype_of(s.dtype), tuple(s.shape[cut:]))
                        for n, s in zip(names, first.output_specs)]
        for f, e in loaded:
            if self.batching:
                self._engine_batch(e, f)
            ins = [(n, s.dtype, tuple(s.shape[cut:])) for n, s in zip(e.input_names, e.input_specs)]
            outs = [(s.dtype, tuple(s.shape[cut:])) for s in e.output_specs]
            if ins != [(n, s.dtype, tuple(s.shape[cut:])) for n, s in zip(first.input_names, first.input_specs)] \
                    or outs != [(s.dtype, tuple(s.shape[cut:])) for s in first.output_specs]:
                raise invalid(f"model {self.name!r} version {self.version}: the engine files {[f.name for f in files]} "
                              "differ in more than the batch size of their inputs and outputs")
        byname = {t.name: t for t in self.inputs}
        for ent in self.config.inputs:
            t = byname.get(ent["name"])
            if t is None:
                raise invalid(f"model {self.name!r}: the config names input {ent['name']!r}, the engine's inputs are "
                              f"{list(byname)}")
            if "data_type" in ent and ent["data_type"] != config_type(t.datatype):
                raise invalid(f"model {self.name!r}: the config gives input {t.name!r} data_type {ent['data_type']}, "
                              f"the engine takes {config_type(t.datatype)}")
            dims = ent.get("dims")
            if dims is not None and (len(dims) != len(t.dims) or any(d not in (-1, s) for d, s in zip(dims, t.dims))):
                raise invalid(f"model {self.name!r}: the config gives input {t.name!r} dims {dims}, the engine takes "
                              f"{list(t.dims)}" + (" (without the batch dimension)" if self.batching else ""))

    def _example(self, batch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        out = []
        for t in self.inputs:
            shape = (batch, *t.dims) if self.batching else t.dims
            dtype = self.instances[0].engines[batch if self.batching else 0].input_specs[len(out)].dtype
            if dtype.is_floating_point:
                out.append(torch.rand(shape, generator=g).to(dtype))
            else:
                out.append(torch.zeros(shape, dtype=dtype))
        return out

    def _warmup(self) -> None:
        for inst in self.instances:
            for b, e in inst.engines.items():
                try:
                    inst.run(e, self._example(b))
                except Exception as err:
                    raise invalid(f"model {self.name!r} version {self.version}: warmup run failed on "
                                  f"{inst.device}: {type(err).__name__}: {err}") from None

    # ------------------------------------------------------------------ description
    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [str(self.version)], "platform": PLATFORM,
                "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape(self.batching)}
                           for t in self.inputs],
                "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape(self.batching)}
                            for t in self.outputs],
                "parameters": self.batching_info()}

    def batching_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"max_batch_size": self.config.max_batch_size,
                                "dynamic_batching": self.config.dynamic_batching is not None,
                                "instance_count": len(self.instances)}
        if self.batching:
            info["engine_batch_sizes"] = list(self.engine_batches)
            info["batch_padding"] = (f"requests of 1 to {self.config.max_batch_size} along dim 0; each batch runs "
                                     f"on the smallest engine of batch {self.engine_batches} that fits it, padded "
                                     "up to that batch, and the outputs are sliced back")
        return info

    def config_json(self) -> dict[str, Any]:
        cfg = self.config
        gpu = self.instances[0].device.type == "cuda"
        d: dict[str, Any] = {
            "name": self.name, "platform": PLATFORM, "backend": "trtjit", "version_policy": cfg.version_policy,
            "max_batch_size": cfg.max_batch_size,
            "input": [{"name": t.name, "data_type": config_type(t.datatype), "dims": list(t.dims)} for t in self.inputs],
            "output": [{"name": t.name, "data_type": config_type(t.datatype), "dims": list(t.dims)}
                       for t in self.outputs],
            "instance_group": [{"name": f"{self.name}_{i}", "kind": "KIND_GPU" if gpu else "KIND_CPU",
                                "count": g.count, "gpus": list(g.gpus)} for i, g in enumerate(cfg.instance_groups)],
            "default_model_filename": cfg.default_model_filename,
            "parameters": {k: {"string_value": v if isinstance(v, str) else json.dumps(v)}
                           for k, v in self.batching_info().items()},
        }
        if cfg.dynamic_batching is not None:
            d["dynamic_batching"] = cfg.dynamic_batching.to_json()
        return d

    # ------------------------------------------------------------------ requests
    def make_request(self, inputs: list[tuple[str, str, list[int], torch.Tensor]], outputs: list[str] | None,
                     timeout_us: int | None, done: Any, cancelled: Any = None) -> InferRequest:
        """Validate decoded inputs against this model; raises ServingError (INVALID_ARGUMENT)."""
        where = f"model {self.name!r} version {self.version}"
        got: dict[str, torch.Tensor] = {}
        shapes: dict[str, list[int]] = {}
        want = {t.name: t for t in self.inputs}
        for name, datatype, shape, tensor in inputs:
            if name in got:
                raise invalid(f"{where}: input {name!r} is given more than once")
            if name not in want:
                raise invalid(f"{where}: unexpected input {name!r} (the model's inputs: {list(want)})")
            t = want[name]
            if datatype != t.datatype:
                raise invalid(f"{where}: input {name!r}: expected datatype {t.datatype}, got {datatype}")
            if self.batching:
                ok = len(shape) == len(t.dims) + 1 and tuple(shape[1:]) == t.dims
            else:
                ok = tuple(shape) == t.dims
            if not ok:
                extra = f" (batch of 1 to {self.config.max_batch_size} in dim 0)" if self.batching else ""
                raise invalid(f"{where}: input {name!r}: expected shape {t.shape(self.batching)}{extra}, got {shape}")
            got[name] = tensor
            shapes[name] = shape
        missing = [n for n in want if n not in got]
        if missing:
            raise invalid(f"{where}: missing input(s) {missing} (the model's inputs: {list(want)})")
        batch = 1
        if self.batching:
            sizes = {s[0] for s in shapes.values()}
            if len(sizes) != 1:
                raise invalid(f"{where}: the inputs disagree on the batch size (dim 0): "
                              f"{ {n: s[0] for n, s in shapes.items()} }")
            batch = sizes.pop()
            if not 1 <= batch <= self.config.max_batch_size:
                raise invalid(f"{where}: batch size {batch} is outside 1..{self.config.max_batch_size} "
                              "(max_batch_size)")
        names = [t.name for t in self.outputs]
        if outputs is None:
            outputs = names
        for o in outputs:
            if o not in names:
                raise invalid(f"{where}: unknown output {o!r} requested (the model's outputs: {names})")
        db = self.config.dynamic_batching
        if timeout_us is not None and timeout_us < 0:
            raise invalid(f"{where}: timeout must be >= 0 microseconds, got {timeout_us}")
        if db is not None and not db.allow_timeout_override:
            timeout_us = None
        if not timeout_us and db is not None and db.default_timeout_microseconds:
            timeout_us = db.default_timeout_microseconds
        req = InferRequest(inputs=got, outputs=list(outputs), batch=batch,
                           key=tuple(tuple(s[1:]) for s in shapes.values()) if self.batching else (),
                           done=done, cancelled=cancelled or (lambda: False))
        if timeout_us:
            req.deadline = time.monotonic() + timeout_us * 1e-6
        return req

    def submit(self, req: InferRequest) -> None:
        self.scheduler.submit(req)

    # ------------------------------------------------------------------ execution (worker threads)
    def fail(self, r: InferRequest, err: ServingError | None) -> None:
        if r.answered:
            return
        r.answered = True
        self.stats.record_failure(time.monotonic_ns() - r.arrival_ns)
        r.done(err if err is not None else unavailable("request cancelled by the client"))

    def execute(self, inst: Instance, batch: list[InferRequest]) -> None:
        t0 = time.monotonic_ns()
        n = sum(r.batch for r in batch)
        try:
            if self.batching:
                size = next(b for b in self.engine_batches if b >= n)
                engine = inst.engines[size]
                if engine.batch_range is not None:  # a dynamic-batch engine: the exact batch (at least its min)
                    size = max(n, engine.batch_range.min)
                args = []
                for i, t in enumerate(self.inputs):
                    buf = torch.empty((size, *t.dims), dtype=engine.input_specs[i].dtype)
                    off = 0
                    for r in batch:
                        buf[off:off + r.batch] = r.inputs[t.name]
                        off += r.batch
                    if off < size:
                        buf[off:] = buf[off - 1]
                    args.append(buf)
            else:
                engine = inst.engines[0]
                args = [batch[0].inputs[t.name] for t in self.inputs]
            outs, t1 = inst.run(engine, args)  # time waiting for the interpreter lock counts as compute input
            t2 = time.monotonic_ns()
            results = []
            off = 0
            index = {t.name: i for i, t in enumerate(self.outputs)}
            for r in batch:
                res = {}
                for name in r.outputs:
                    o = outs[index[name]]
                    part = o[off:off + r.batch] if self.batching else o
                    res[name] = part.to("cpu", copy=True)
                results.append(res)
                off += r.batch
            t3 = time.monotonic_ns()
        except Exception as e:
            log.exception("%s version %s: execution failed", self.name, self.version)
            err = e if isinstance(e, ServingError) else ServingError(
                f"model {self.name!r} version {self.version}: execution failed: {type(e).__name__}: {e}", "INTERNAL")
            for r in batch:
                self.fail(r, err)
            return
        self.stats.record_execution(n, t1 - t0, t2 - t1, t3 - t2)
        for r, res in zip(batch, results):
            if r.answered:
                continue
            r.answered = True
            self.stats.record_success(r.batch, t3 - r.arrival_ns, r.dequeue_ns - r.arrival_ns, t1 - t0, t2 - t1,
                                      t3 - t2)
            r.done(res)

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        self.scheduler.close(wait, timeout)

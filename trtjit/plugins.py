"""Plugins: user ops with their own Triton kernels, in the lifecycle of TensorRT's ``IPluginExt``.

A plugin is a subclass of ``Plugin`` registered (by name and version) in a ``PluginRegistry``, the plugin
factory. Where it is used:

* the ONNX importer asks the registry for op types it has no converter for (custom domains included;
  ``Plugin.namespace`` is the ONNX domain it serves, ``""`` for any);
* the torch frontend maps a custom op (``torch.library``, e.g. ``mylib::op``, named by ``Plugin.torch_op``)
  to it;
* ``add_plugin_node`` puts an IR node ``plugin`` (attrs: name, version, namespace, state = base64 of
  ``serialize()``, the chosen format, workspace bytes, max batch) into a graph. Its reference
  implementation runs the plugin (so the reference interpreter works) and engines call ``enqueue`` for it
  instead of a generated kernel.

Lifecycle (as TensorRT drives IPluginExt):

    build:   num_outputs / output_specs(input specs)      shapes and dtypes (getOutputDimensions)
             supports_format(format)                      the builder offers fp32 NCHW, fp16 NCHW, fp16 NHWC,
                                                          int8 NCHW (in order of preference) and inserts casts
                                                          and transposes around the node for the first accepted
             configure(inputs, outputs, format, max_batch)
             workspace_size(max_batch)                    bytes of scratch memory the engine hands to enqueue
             serialize() -> bytes                         stored in the node (and so in engine files)
    run:     deserialize(bytes) -> configure -> initialize -> enqueue(inputs, outputs, workspace, stream)...
             -> terminate                                 when the engine is closed or released

A loaded engine recreates each plugin through the registry from its stored state; a plugin that is not
registered fails the load with a message naming it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trtjit.errors import BuildError, EngineError, GraphError
from trtjit.ir import DTYPES, Graph, TensorSpec, Value, dtype_name

NCHW, NHWC = "NCHW", "NHWC"


class PluginNotRegisteredError(EngineError, GraphError):
    """A graph or engine uses a plugin (name, version) that is not in the registry."""


@dataclass(frozen=True)
class PluginFormat:
    """A data type and memory layout for every floating-point tensor a plugin reads and writes.

    ``NCHW`` is the logical (row-major) layout; ``NHWC`` stores rank-4 tensors channels-last (the tensors
    the plugin sees then have shape (N, H, W, C)). Integer tensors (indices ...) keep their dtype."""

    dtype: torch.dtype
    layout: str = NCHW

    def __str__(self) -> str:
        short = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8"}
        return f"{short.get(self.dtype, dtype_name(self.dtype))} {self.layout}"

    def to_json(self) -> dict:
        return {"dtype": dtype_name(self.dtype), "layout": self.layout}

    @staticmethod
    def from_json(d: dict | None) -> PluginFormat | None:
        if d is None:
            return None
        return PluginFormat(DTYPES[d["dtype"]], d["layout"])


FP32_NCHW = PluginFormat(torch.float32, NCHW)
FP16_NCHW = PluginFormat(torch.float16, NCHW)
FP16_NHWC = PluginFormat(torch.float16, NHWC)
INT8_NCHW = PluginFormat(torch.int8, NCHW)
OFFERED_FORMATS = (FP32_NCHW, FP16_NCHW, FP16_NHWC, INT8_NCHW)


class Plugin:
    """Base class of plugins. Override what your op needs; ``enqueue`` and ``output_specs`` at least.

    Instances are created from *fields* (JSON-able keyword arguments: ONNX attributes, torch non-tensor
    arguments): ``MyPlugin(**fields)``. The default ``serialize`` stores the fields as JSON; override it
    (and ``deserialize``) for other state.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    namespace: ClassVar[str] = ""
    torch_op: ClassVar[str | None] = None

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    # ------------------------------------------------------------------------------- build time
    def num_outputs(self) -> int:
        return 1

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        """Output shapes (logical, NCHW) and dtypes for inputs of these specs."""
        raise NotImplementedError(f"plugin {self.name!r} does not implement output_specs")

    def supports_format(self, fmt: PluginFormat) -> bool:
        """Whether enqueue can take tensors of this dtype and layout (called for every offered format)."""
        return fmt == FP32_NCHW

    def configure(self, inputs: list[TensorSpec], outputs: list[TensorSpec], fmt: PluginFormat,
                  max_batch: int) -> None:
        """The shapes (logical), dtypes and format the plugin will run with; called before initialize."""

    def workspace_size(self, max_batch: int) -> int:
        """Bytes of scratch memory enqueue needs (after configure)."""
        return 0

    # --------------------------------------------------------------------------------- run time
    def initialize(self) -> None:
        """Acquire resources; called once before the first enqueue."""

    def enqueue(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor], workspace: torch.Tensor,
                stream: Any) -> None:
        """Compute: read ``inputs`` and write ``outputs`` (contiguous tensors in the configured format)."""
        raise NotImplementedError(f"plugin {self.name!r} does not implement enqueue")

    def terminate(self) -> None:
        """Release what initialize acquired; called when the engine is closed or released."""

    # -------------------------------------------------------------------------------- state
    def serialize(self) -> bytes:
        return json.dumps(self.fields, sort_keys=True).encode()

    @classmethod
    def deserialize(cls, data: bytes) -> Plugin:
        return cls(**json.loads(data.decode()))

    @classmethod
    def fields_from_torch(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Fields from a torch custom op's non-tensor arguments (by schema name)."""
        return dict(args)


# ------------------------------------------------------------------------------------------ registry
class PluginRegistry:
    """The plugin factory: plugin classes by (name, version)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], type[Plugin]] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[Plugin] | None = None, *, replace: bool = False) -> Any:
        """Register a Plugin subclass (usable as a decorator). Re-registering the same key needs replace."""
        def do(c: type[Plugin]) -> type[Plugin]:
            if not (isinstance(c, type) and issubclass(c, Plugin)) or not c.name:
                raise BuildError(f"{c!r} is not a Plugin subclass with a name")
            key = (c.name, str(c.version))
            with self._lock:
                if key in self._by_key and self._by_key[key] is not c and not replace:
                    raise BuildError(f"plugin {c.name!r} version {c.version!r} is already registered "
                                     f"({self._by_key[key].__qualname__}); pass replace=True")
                self._by_key[key] = c
            return c
        return do if cls is None else do(cls)

    def unregister(self, name: str, version: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._by_key if k[0] == name and (version is None or k[1] == str(version))]:
                del self._by_key[key]

    def versions(self, name: str) -> list[str]:
        return sorted((k[1] for k in self._by_key if k[0] == name), key=_version_key)

    def get(self, name: str, version: str | None = None) -> type[Plugin]:
        vs = self.versions(name)
        if version is None and vs:
            version = vs[-1]
        cls = self._by_key.get((name, str(version)))
        if cls is None:
            have = f"registered versions: {vs}" if vs else "no version of it is registered"
            raise PluginNotRegisteredError(
                f"plugin {name!r} version {version!r} is not registered ({have}); import the module that "
                "defines it and register it with trtjit.plugins.register(...) before building or loading")
        return cls

    def find_for_onnx(self, domain: str, op_type: str, version: Any = None) -> type[Plugin] | None:
        for (name, ver), cls in sorted(self._by_key.items(), key=lambda kv: _version_key(kv[0][1]), reverse=True):
            if name == op_type and (not cls.namespace or cls.namespace == domain) and \
                    (version is None or str(version) == ver):
                return cls
        return None

    def find_for_torch(self, target: str) -> type[Plugin] | None:
        """The plugin serving a torch op named ``ns::op`` or ``ns.op.overload`` (as the frontend spells it)."""
        for cls in self._by_key.values():
            if cls.torch_op and _torch_key(cls.torch_op) == _torch_key(target):
                return cls
        return None

    def deserialize(self, name: str, version: str, state: str) -> Plugin:
        cls = self.get(name, version)
        try:
            return cls.deserialize(base64.b64decode(state.encode()))
        except Exception as e:
            raise EngineError(f"plugin {name!r} version {version!r} could not deserialize its stored state: "
                              f"{type(e).__name__}: {e}") from e


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in str(v).split("."))


def _torch_key(s: str) -> str:
    s = s.replace("::", ".")
    parts = s.split(".")
    if len(parts) >= 3:  # ns.op.overload
        parts = parts[:2]
    return ".".join(parts)


REGISTRY = PluginRegistry()
register = REGISTRY.register
unregister = REGISTRY.unregister


# ------------------------------------------------------------------------------------- IR plumbing
_CACHE: dict[tuple[str, str, str], Plugin] = {}


def _instance(attrs: dict[str, Any]) -> Plugin:
    """A plugin instance for shape inference (cached per name, version, state)."""
    key = (attrs["name"], str(attrs["version"]), attrs["state"])
    cls = REGISTRY.get(attrs["name"], str(attrs["version"]))
    p = _CACHE.get(key)
    if p is None or type(p) is not cls:
        p = REGISTRY.deserialize(*key)
        _CACHE[key] = p
    return p


def _to_layout(spec: TensorSpec, layout: str, inverse: bool = False) -> TensorSpec:
    if layout != NHWC or len(spec.shape) != 4:
        return spec
    n, a, b, c = spec.shape
    return TensorSpec((n, c, a, b) if inverse else (n, b, c, a), spec.dtype)


def _with_dtype(spec: TensorSpec, fmt: PluginFormat) -> TensorSpec:
    return TensorSpec(spec.shape, fmt.dtype) if _converts(spec.dtype, fmt) else spec


def _converts(dtype: torch.dtype, fmt: PluginFormat) -> bool:
    """Whether a tensor of ``dtype`` takes the format's dtype (floating tensors; int8 formats take int8)."""
    return dtype.is_floating_point or (dtype == torch.int8 and fmt.dtype == torch.int8)


def plugin_infer(specs: list[TensorSpec], attrs: dict[str, Any]) -> list[TensorSpec]:
    """Output specs of a plugin node (physical: in its chosen format, if one is chosen)."""
    p = _instance(attrs)
    fmt = PluginFormat.from_json(attrs.get("format"))
    logical = [_to_layout(s, fmt.layout, inverse=True) for s in specs] if fmt else list(specs)
    outs = list(p.output_specs(logical))
    if len(outs) != p.num_outputs():
        raise GraphError(f"plugin {attrs['name']!r}: output_specs gave {len(outs)} specs, num_outputs() is "
                         f"{p.num_outputs()}")
    return [_to_layout(o, fmt.layout) for o in outs] if fmt else outs


def plugin_reference(ins: list[torch.Tensor], **attrs: Any) -> list[torch.Tensor]:
    """Reference implementation of a plugin node: run the plugin (configure, initialize, enqueue, terminate)
    on the CPU tensors given, converting them to a supported format first when none is chosen yet."""
    p = REGISTRY.deserialize(attrs["name"], str(attrs["version"]), attrs["state"])
    fmt = PluginFormat.from_json(attrs.get("format"))
    specs = [TensorSpec.of(t) for t in ins]
    if fmt is not None:
        return _run_once(p, ins, fmt, int(attrs.get("max_batch") or _max_batch(specs)))
    fmt = select_format(p, specs, "fp32", where=attrs["name"])
    out_dtypes = [s.dtype for s in p.output_specs(specs)]
    phys = [_physical(t, fmt) for t in ins]
    outs = _run_once(p, phys, fmt, _max_batch(specs))
    return [_logical(o, fmt, dt) for o, dt in zip(outs, out_dtypes)]


def _physical(t: torch.Tensor, fmt: PluginFormat) -> torch.Tensor:
    if _converts(t.dtype, fmt):
        t = t.to(fmt.dtype)
    if fmt.layout == NHWC and t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.contiguous()


def _logical(t: torch.Tensor, fmt: PluginFormat, dtype: torch.dtype) -> torch.Tensor:
    if fmt.layout == NHWC and t.dim() == 4:
        t = t.permute(0, 3, 1, 2)
    return t.to(dtype).contiguous()


def _max_batch(specs: Sequence[TensorSpec]) -> int:
    return int(specs[0].shape[0]) if specs and specs[0].shape else 1


def _run_once(p: Plugin, ins: list[torch.Tensor], fmt: PluginFormat, max_batch: int) -> list[torch.Tensor]:
    specs = [TensorSpec.of(t) for t in ins]
    logical = [_to_layout(s, fmt.layout, inverse=True) for s in specs]
    out_logical = list(p.output_specs(logical))
    out_phys = [_to_layout(o, fmt.layout) for o in out_logical]
    p.configure(logical, out_logical, fmt, max_batch)
    p.initialize()
    try:
        dev = ins[0].device if ins else torch.device("cpu")
        ws = torch.empty(max(int(p.workspace_size(max_batch)), 0), dtype=torch.uint8, device=dev)
        outs = [torch.empty(s.shape, dtype=s.dtype, device=dev) for s in out_phys]
        p.enqueue([t.contiguous() for t in ins], outs, ws, _stream(dev))
        return outs
    finally:
        p.terminate()


def _stream(device: torch.device) -> Any:
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


def add_plugin_node(graph: Graph, plugin: type[Plugin] | Plugin, inputs: Sequence[Value],
                    fields: dict[str, Any] | None = None, name: str | None = None, source: str = "") -> list[Value]:
    """Add a ``plugin`` node running ``plugin`` (a registered class, created from ``fields``, or an
    instance) on ``inputs``; returns its output values."""
    inst = plugin if isinstance(plugin, Plugin) else plugin(**(fields or {}))
    cls = type(inst)
    REGISTRY.get(cls.name, str(cls.version))  # must be registered: engines recreate it from the registry
    attrs = {"name": cls.name, "version": str(cls.version), "namespace": cls.namespace,
             "state": base64.b64encode(inst.serialize()).decode()}
    node = graph.add("plugin", list(inputs), attrs, name=name or f"plugin_{cls.name}", source=source or cls.name)
    return [Value(node.name, i) for i in range(len(node.outputs))]


# ------------------------------------------------------------------------------ builder: formats
def offered_formats(specs: Sequence[TensorSpec], precision: str = "fp32") -> list[PluginFormat]:
    """The formats the builder offers a plugin, most preferred first."""
    floats = [s for s in specs if s.dtype.is_floating_point]
    order = [FP16_NCHW, FP16_NHWC, FP32_NCHW] if precision in ("fp16", "bf16") else [FP32_NCHW, FP16_NCHW, FP16_NHWC]
    if floats and all(s.dtype == torch.float16 for s in floats):
        order = [FP16_NCHW, FP16_NHWC, FP32_NCHW]
    if not any(len(s.shape) == 4 for s in floats):  # channels-last only means something for 4-D tensors
        order = [f for f in order if f.layout != NHWC]
    if any(s.dtype == torch.int8 for s in specs):
        order = [INT8_NCHW] + order
    return order


def select_format(p: Plugin, specs: Sequence[TensorSpec], precision: str = "fp32", where: str = "") -> PluginFormat:
    offered = offered_formats(specs, precision)
    for fmt in offered:
        if p.supports_format(fmt):
            return fmt
    raise BuildError(f"plugin node {where!r} ({type(p).name} version {type(p).version}) accepts none of the "
                     f"formats the builder offered: {', '.join(str(f) for f in offered)} (supports_format "
                     "returned False for each)")


def configure_plugins(graph: Graph, precision: str = "fp32") -> list[dict[str, Any]]:
    """Builder step: choose each plugin node's format, insert the casts and transposes it needs, configure
    the plugin once (validation) and record its workspace size. Returns one event per plugin node."""
    events = []
    for name in graph.topo_order():
        if name not in graph:
            continue
        node = graph.node(name)
        if node.op != "plugin" or node.attrs.get("format") is not None:
            continue
        p = REGISTRY.deserialize(node.attrs["name"], str(node.attrs["version"]), node.attrs["state"])
        ins = graph.inputs_of(name)
        specs = [graph.spec(v) for v in ins]
        fmt = select_format(p, specs, precision, where=name)
        new_ins = []
        for i, v in enumerate(ins):
            s = graph.spec(v)
            if _converts(s.dtype, fmt) and s.dtype != fmt.dtype:
                v = Value(graph.add("cast", [v], {"dtype": dtype_name(fmt.dtype)}, name=f"{name}.in{i}_cast",
                                    source=node.source).name)
            if fmt.layout == NHWC and len(s.shape) == 4:
                v = Value(graph.add("permute", [v], {"dims": [0, 2, 3, 1]}, name=f"{name}.in{i}_nhwc",
                                    source=node.source).name)
            new_ins.append(v)
        logical = [_with_dtype(s, fmt) for s in specs]
        max_batch = _max_batch(specs)
        out_logical = list(p.output_specs(logical))
        p.configure(logical, out_logical, fmt, max_batch)
        ws = int(p.workspace_size(max_batch))
        attrs = dict(node.attrs, format=fmt.to_json(), workspace=ws, max_batch=max_batch)
        tmp = graph.add("plugin", new_ins, attrs, name=f"{name}.fmt", source=node.source)
        for i, want in enumerate(node.outputs):
            v = Value(tmp.name, i)
            if fmt.layout == NHWC and len(want.shape) == 4:
                v = Value(graph.add("permute", [v], {"dims": [0, 3, 1, 2]}, name=f"{name}.out{i}_nchw",
                                    source=node.source).name)
            if graph.spec(v).dtype != want.dtype:
                v = Value(graph.add("cast", [v], {"dtype": dtype_name(want.dtype)}, name=f"{name}.out{i}_cast",
                                    source=node.source).name)
            graph.replace_all_uses(Value(name, i), v)
        graph.remove_node(name)
        graph.rename(tmp.name, name)
        events.append({"rule": "plugin => chosen format", "node": name, "fired": True,
                       "detail": f"{node.attrs['name']} v{node.attrs['version']}: {fmt} (offered "
                                 f"{', '.join(str(f) for f in offered_formats(specs, precision))}); workspace "
                                 f"{ws} bytes"})
    return events


# ------------------------------------------------------------------------------- engine: the step
def plugin_kernel_spec(graph: Graph, name: str, layouts: dict[Value, Any]) -> Any:
    """The engine step of plugin node ``name``: a KernelSpec whose 'kernel' is the plugin's enqueue."""
    from trtjit.codegen.common import KernelSpec, ident

    node = graph.node(name)
    a = node.attrs
    if a.get("format") is None:
        raise BuildError(f"plugin node {name!r} reached lowering without a chosen format (configure_plugins "
                         "did not run)")
    REGISTRY.get(a["name"], str(a["version"]))  # fail early and clearly when it is not registered
    ins = graph.inputs_of(name)
    args = [layouts[v].root for v in ins] + [Value(name, i) for i in range(len(node.outputs))]
    digest = hashlib.sha256(a["state"].encode()).hexdigest()[:16]
    kname = ident(f"plugin_{name}")
    source = (f"# trtjit plugin step {kname}: node {name!r} runs plugin {a['name']!r} version {a['version']} "
              f"(namespace {a.get('namespace', '')!r})\n"
              f"# format {PluginFormat.from_json(a['format'])}, workspace {a.get('workspace', 0)} bytes, "
              f"max batch {a.get('max_batch', 0)}, state sha256 {digest}\n"
              f"# inputs {[str(v) for v in ins]} -> outputs {[str(s) for s in node.outputs]}\n")
    return KernelSpec(kname, "plugin", name, source, (1,), {}, args, [name], [], num_warps=0, num_stages=0,
                      bytes=sum(graph.spec(v).nbytes for v in ins) + sum(s.nbytes for s in node.outputs))


class PluginRunner:
    """Stands where a Triton kernel would in an engine: ``runner[grid](*buffers, **kw)`` calls enqueue.

    Created when the engine loads its kernels: deserialize -> configure -> initialize; ``release()``
    (Engine.close, or the engine's garbage collection) calls terminate once."""

    _trtjit_plugin_step = True

    def __init__(self, graph: Graph, kernel: Any) -> None:
        from trtjit.layout import compute_layouts

        node = graph.node(kernel.node)
        a = node.attrs
        self.node = kernel.node
        self.fmt = PluginFormat.from_json(a["format"])
        self.max_batch = int(a.get("max_batch") or 1)
        self.workspace_bytes = int(a.get("workspace") or 0)
        ins = graph.inputs_of(kernel.node)
        layouts = compute_layouts(graph)
        self.in_layouts = [layouts[v] for v in ins]
        self.in_specs = [graph.spec(v) for v in ins]
        self.out_specs = list(node.outputs)
        self.plugin = REGISTRY.deserialize(a["name"], str(a["version"]), a["state"])
        logical = [_to_layout(s, self.fmt.layout, inverse=True) for s in self.in_specs]
        out_logical = [_to_layout(s, self.fmt.layout, inverse=True) for s in self.out_specs]
        self.plugin.configure(logical, out_logical, self.fmt, self.max_batch)
        self.plugin.initialize()
        self._workspace: dict[torch.device, torch.Tensor] = {}
        self._alive = True

    def __getitem__(self, grid: Any) -> PluginRunner:
        return self

    def workspace(self, device: torch.device) -> torch.Tensor:
        if device not in self._workspace:
            self._workspace[device] = torch.empty(self.workspace_bytes, dtype=torch.uint8, device=device)
        return self._workspace[device]

    def __call__(self, *buffers: torch.Tensor, **_: Any) -> None:
        if not self._alive:
            raise EngineError(f"plugin step {self.node!r} runs after its engine was closed")
        n = len(self.in_layouts)
        ins = []
        for buf, lay, spec in zip(buffers[:n], self.in_layouts, self.in_specs):
            t = buf.as_strided(lay.shape, lay.strides, buf.storage_offset() + lay.offset) if \
                math.prod(lay.shape) else torch.empty(spec.shape, dtype=spec.dtype, device=buf.device)
            ins.append(t if t.is_contiguous() else t.contiguous())
        outs = [b.view(-1)[:s.numel].view(s.shape) if b.dim() != len(s.shape) or tuple(b.shape) != s.shape else b
                for b, s in zip(buffers[n:], self.out_specs)]
        dev = outs[0].device if outs else (ins[0].device if ins else torch.device("cpu"))
        self.plugin.enqueue(ins, outs, self.workspace(dev), _stream(dev))

    def release(self) -> None:
        if self._alive:
            self._alive = False
            self.plugin.terminate()
            self._workspace.clear()


def torch_converter(target: str) -> Callable[[Any, dict[str, Any]], Any] | None:
    """A torch-frontend converter for custom op ``target`` when a registered plugin serves it."""
    if REGISTRY.find_for_torch(target) is None:
        return None

    def conv(ctx: Any, a: dict[str, Any]) -> Any:
        cls = REGISTRY.find_for_torch(target)
        if cls is None:
            raise BuildError(f"node {ctx.name!r}: the plugin for custom op {target!r} is no longer registered")
        ins = [v for v in a.values() if isinstance(v, Value)]
        raw = {k: v for k, v in a.items() if not isinstance(v, Value)}
        fields = cls.fields_from_torch(raw)
        outs = add_plugin_node(ctx.g, cls, ins, fields, name=ctx.name, source=ctx.source)
        return outs[0] if len(outs) == 1 else tuple(outs)

    return conv


__all__ = ["FP16_NCHW", "FP16_NHWC", "FP32_NCHW", "INT8_NCHW", "NCHW", "NHWC", "OFFERED_FORMATS", "Plugin",
           "PluginFormat", "PluginNotRegisteredError", "PluginRegistry", "PluginRunner", "REGISTRY",
           "add_plugin_node", "configure_plugins", "register", "unregister"]

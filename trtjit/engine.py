"""The engine: runs an optimized graph as a sequence of generated Triton kernel launches.

Buffers come from the memory plan: one arena per device for intermediates, fresh tensors for outputs,
constants moved to the device once. Views cost nothing: kernels read their inputs through strides
baked into their source. On a GPU the engine replays as one CUDA graph (``cuda_graphs``), and on sm_90+
every generated kernel is a programmatic dependent launch (``pdl``): it is scheduled while the previous
kernel's last wave drains and waits for its writes in its first instruction, hiding the launch gap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from trtjit.backend import check_device, ensure_triton_allocator, interpreting, load_kernel
from trtjit.codegen.common import PDL, KernelSpec, kernel_identity, takes_pdl
from trtjit.codegen.gluon_gemm import is_gluon_source
from trtjit.dynamic import at, batch_of, format_shape, grid_at, range_of, upper
from trtjit.errors import EngineError, InputError
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.layout import compute_layouts
from trtjit.options import BuildOptions
from trtjit.passmanager import PassRecord
from trtjit.xc_worker import PDL_MIN_ARCH, arch_number


@dataclass
class KernelProfile:
    name: str
    covers: list[str]
    grid: tuple[int, ...]
    ms: float


class _DeviceState:
    def __init__(self, engine: Engine, device: torch.device) -> None:
        g = engine.graph
        self.static: dict[Value, torch.Tensor] = {}
        for name in g.topo_order():
            n = g.node(name)
            if n.op == "constant":
                self.static[Value(name)] = n.value.to(device).contiguous()
        plan = g.meta.get("memory_plan", {"arena_bytes": 0, "offsets": {}})
        self.arena = torch.empty(max(plan["arena_bytes"], 1), dtype=torch.uint8, device=device)
        for key, off in plan["offsets"].items():
            node, idx = key.rsplit(":", 1)
            spec = g.node(node).outputs[int(idx)]
            nbytes = upper(spec.nbytes)  # a dynamic batch is planned for its max
            self.static[Value(node, int(idx))] = self.arena[off:off + nbytes].view(spec.dtype)


class Engine:
    """A compiled model. Call it like the module; ``graph`` is the optimized IR, ``kernels`` the
    generated Triton kernels (source, launch grid, IR nodes each covers)."""

    def __init__(self, graph: Graph, kernels: list[KernelSpec], options: BuildOptions,
                 build_log: list[PassRecord] | None = None, build_seconds: float = 0.0) -> None:
        self.graph = graph
        self.kernels = kernels
        self.options = options
        self.build_log = build_log or []
        self.build_seconds = build_seconds
        # seconds of the build's phases (import, passes, codegen, cubins; the autotune pass is in passes)
        self.build_phases: dict[str, float] = {}
        self.input_names = list(graph.inputs)
        self.input_specs = [graph.node(n).spec for n in graph.inputs]
        self.output_specs = [graph.spec(v) for v in graph.outputs]
        spec = graph.meta.get("out_spec")
        self._out_spec = pytree.treespec_loads(spec) if spec else None
        layouts = compute_layouts(graph)
        self._output_roots = [layouts[v].root for v in graph.outputs]
        self._fns: list[Any] | None = None
        self._states: dict[torch.device, _DeviceState] = {}
        self.cuda_graphs = True  # replay the whole engine as one CUDA graph on GPUs (static shapes)
        self.pdl = True  # programmatic dependent launch of the generated kernels on sm_90+ GPUs
        self._pdl_kernels = [k.template != "plugin" and takes_pdl(k.source) for k in kernels]
        self._arch: dict[torch.device, int] = {}
        self._graphs: dict[tuple, tuple] = {}  # (device, batch, pdl) -> captured CUDA graph
        self.binaries: dict[str, list[Any]] = {}  # arch -> KernelBinary per kernel (trtjit.crosscompile)
        self.batch_range = range_of(self.input_specs)  # dynamic batch (trtjit.dynamic), None when static
        self._nb: int | None = None  # the batch of the inputs bound last (dynamic engines)
        self.allow_jit = True  # False: a GPU whose arch has no stored binaries is refused (trtjit.load)

    @property
    def targets(self) -> list[str]:
        """GPU archs this engine holds compiled kernels (cubin + PTX) for."""
        return sorted(self.binaries, key=lambda t: int(t.split("_")[1]))

    # ------------------------------------------------------------------ running
    def _functions(self, device: torch.device | None = None) -> list[Any]:
        """One launchable function per kernel; kernels identical up to their name and comments share one (and
        one compilation), as repeated blocks of a network do."""
        if device is not None and device.type == "cuda" and not interpreting() and (self.binaries or not self.allow_jit):
            from trtjit.cuda_launcher import engine_kernels
            cubins = engine_kernels(self, device)  # stored cubins for this arch, launched through the driver
            if cubins is not None:
                return cubins
        if self._fns is None:
            gluon = [k.name for k in self.kernels if is_gluon_source(k.source)]
            if gluon and (interpreting() or device is None or device.type != "cuda"):
                raise EngineError(f"kernel {gluon[0]!r} (and {len(gluon) - 1} more) is a Gluon ping-pong GEMM for "
                                  "Hopper (sm_90) GPUs: it does not run under Triton's interpreter or on the CPU. "
                                  "Build with gemm_tactic='triton' for an engine that does")
            if gluon:  # device-side TMA descriptors take global scratch from Triton's allocator
                ensure_triton_allocator()
            shared: dict[str, Any] = {}
            fns = []
            for k in self.kernels:
                if k.template == "plugin":  # a plugin step: the plugin's enqueue (trtjit.plugins)
                    from trtjit.plugins import PluginRunner

                    fns.append(PluginRunner(self.graph, k))
                    continue
                key = kernel_identity(k.source, k.name)
                if key not in shared:
                    shared[key] = load_kernel(k.name, k.source)
                fns.append(shared[key])
            self._fns = fns
        return self._fns

    def input_shapes(self) -> dict[str, dict[str, list[int]]]:
        """{input name: {"min": shape, "opt": shape, "max": shape}}: the shapes this engine serves."""
        r = self.batch_range
        return {n: {k: list(at(s.shape, b)) for k, b in
                    (("min", r.min if r else 0), ("opt", r.opt if r else 0), ("max", r.max if r else 0))}
                for n, s in zip(self.input_names, self.input_specs)}

    def _check_inputs(self, args: tuple) -> torch.device:
        if self.batch_range is not None:
            return self._check_dynamic(args)
        if len(args) != len(self.input_specs):
            raise InputError(f"engine takes {len(self.input_specs)} input(s) {self.input_names}, got {len(args)}")
        device = None
        for i, (t, name, want) in enumerate(zip(args, self.input_names, self.input_specs)):
            if not isinstance(t, torch.Tensor):
                raise InputError(f"input {i} ({name!r}) must be a torch.Tensor, got {type(t).__name__}")
            if TensorSpec.of(t) != want:
                raise InputError(f"input {i} ({name!r}): expected {want} (shape {list(want.shape)}, dtype "
                                 f"{want.dtype}), got shape {list(t.shape)}, dtype {t.dtype}")
            if device is None:
                device = t.device
            elif t.device != device:
                raise InputError(f"input {i} ({name!r}) is on {t.device}, the others on {device}")
        if self.graph.meta.get("bound_inputs"):
            self._check_bound(args)
        device = device or torch.device("cpu")
        check_device(device.type)
        return device

    def _check_dynamic(self, args: tuple) -> torch.device:
        """Inputs of a dynamic-batch engine: every dim fixed but the batch's, the batch in range and the same
        for every input. Sets ``_nb``, the batch the next launches use."""
        if len(args) != len(self.input_specs):
            raise InputError(f"engine takes {len(self.input_specs)} input(s) {self.input_names}, got {len(args)}")
        device, nb = None, None
        for i, (t, name, want) in enumerate(zip(args, self.input_names, self.input_specs)):
            if not isinstance(t, torch.Tensor):
                raise InputError(f"input {i} ({name!r}) must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != want.dtype:
                raise InputError(f"input {i} ({name!r}): expected dtype {want.dtype} (shape "
                                 f"{format_shape(want.shape)}), got {t.dtype}")
            b = batch_of(name, i, want.shape, tuple(t.shape))
            if b is not None and nb is not None and b != nb:
                raise InputError(f"input {i} ({name!r}) has batch {b}, an earlier input batch {nb}; all inputs "
                                 "share one batch size")
            nb = b if b is not None else nb
            if device is None:
                device = t.device
            elif t.device != device:
                raise InputError(f"input {i} ({name!r}) is on {t.device}, the others on {device}")
        if nb is None:
            raise InputError(f"none of the inputs {self.input_names} carries the dynamic batch dim")
        if self.graph.meta.get("bound_inputs"):
            self._check_bound(args)
        self._nb = nb
        device = device or torch.device("cpu")
        check_device(device.type)
        return device

    def _check_bound(self, args: tuple) -> None:
        """Shape-tensor inputs (ONNX frontend) were bound to their example values at build time; the engine
        is specialized to those values and refuses others."""
        bound = self.graph.meta["bound_inputs"]
        for i, (t, name) in enumerate(zip(args, self.input_names)):
            if name in bound and t.detach().reshape(-1).tolist() != bound[name]["value"]:
                raise InputError(f"input {i} ({name!r}) is a shape tensor whose value was fixed when the engine was "
                                 f"built: expected {bound[name]['value']}, got {t.detach().reshape(-1).tolist()}; "
                                 "build an engine for this value")

    def _state(self, device: torch.device) -> _DeviceState:
        if device not in self._states:
            self._states[device] = _DeviceState(self, device)
        return self._states[device]

    def _bind(self, args: tuple) -> tuple[dict[Value, torch.Tensor], list[torch.Tensor]]:
        device = self._check_inputs(args)
        bufs = dict(self._state(device).static)
        for name, t in zip(self.input_names, args):
            t = t if t.is_contiguous() else t.contiguous()
            bufs[Value(name)] = t.clone() if t.is_cuda and t.data_ptr() % 16 else t  # kernels assume 16-B alignment
        outs = []
        for root, spec in zip(self._output_roots, self.output_specs):
            if root not in bufs:
                bufs[root] = torch.empty(at(spec.shape, self._nb), dtype=spec.dtype, device=device)
            outs.append(bufs[root])
        return bufs, outs

    def _pdl_on(self, device: torch.device | None) -> bool:
        """Whether launches on ``device`` are programmatic dependent launches (``pdl``, a GPU of sm_90+)."""
        if not self.pdl or device is None or device.type != "cuda" or torch.version.hip:
            return False  # (ROCm GPUs report "cuda" devices; griddepcontrol is NVIDIA's)
        if device not in self._arch:  # looked up once per device: this runs on every call
            from trtjit.cuda_launcher import current_arch
            arch = current_arch(device)  # None under the interpreter
            self._arch[device] = arch_number(arch) if arch else 0
        return self._arch[device] >= PDL_MIN_ARCH

    def _launch(self, i: int, fn: Any, bufs: dict[Value, torch.Tensor], pdl: bool = False) -> None:
        k = self.kernels[i]
        nb = () if not k.batch_arg else (self._nb,)  # dynamic batch: grids and sizes follow the runtime batch
        # PDL: the JIT compiles the griddepcontrol prologue in; stored cubins have it where their arch does
        extra = {PDL: True, "launch_pdl": True} if pdl and self._pdl_kernels[i] else {}
        if k.maxnreg:
            extra["maxnreg"] = k.maxnreg
        fn[grid_at(k.grid, self._nb)](*[bufs[a] for a in k.args], *nb, **k.constexprs, num_warps=k.num_warps,
                                      num_stages=k.num_stages, **extra)

    def run(self, *args: torch.Tensor, on_kernel: Callable[[int, KernelSpec, dict[Value, torch.Tensor]], None]
            | None = None) -> list[torch.Tensor]:
        """Run and return the flat list of outputs. ``on_kernel(i, kernel, buffers)``, when given, is called
        after each kernel launch (debugging: ``trtjit.explore`` captures every kernel's outputs with it)."""
        bufs, outs = self._bind(args)
        device = outs[0].device if outs else None
        fns = self._functions(device)
        pdl = self._pdl_on(device)
        if interpreting():  # masked-off lanes may divide by zero in numpy; they are never stored
            with np.errstate(all="ignore"):
                for i, fn in enumerate(fns):
                    self._launch(i, fn, bufs)
                    if on_kernel is not None:
                        on_kernel(i, self.kernels[i], bufs)
        else:
            for i, fn in enumerate(fns):
                self._launch(i, fn, bufs, pdl=pdl and on_kernel is None)
                if on_kernel is not None:
                    on_kernel(i, self.kernels[i], bufs)
        return outs

    def _replay(self, args: tuple) -> list[torch.Tensor] | None:
        """Run as one CUDA graph (captured on the first call per device): no per-kernel launch work on
        the hot path. Inputs are copied into static buffers; outputs are returned as fresh tensors."""
        if not self.cuda_graphs or interpreting() or not args or not all(
                isinstance(t, torch.Tensor) and t.is_cuda for t in args):
            return None
        device = self._check_inputs(args)
        nb, pdl = self._nb, self._pdl_on(device)
        key = (device, nb, pdl)  # dynamic batch: one graph per batch
        cap = self._graphs.get(key)
        if cap is None:
            static_in = tuple(t.clone(memory_format=torch.contiguous_format) for t in args)
            bufs, outs = self._bind(static_in)
            fns = self._functions(device)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up: compiles and loads every kernel before capture
                for i, fn in enumerate(fns):
                    self._launch(i, fn, bufs, pdl)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):  # PDL launches become programmatic edges of the graph
                    for i, fn in enumerate(fns):
                        self._launch(i, fn, bufs, pdl)
            except Exception as e:  # capture unsupported here: fall back to plain launches, say why once
                import warnings
                warnings.warn(f"trtjit: CUDA graph capture failed ({type(e).__name__}: {e}); launching kernels "
                              "one by one", stacklevel=3)
                self.cuda_graphs = False
                return None
            cap = self._graphs[key] = (graph, static_in, outs)
        graph, static_in, outs = cap
        self._nb = nb
        for dst, src in zip(static_in, args):
            dst.copy_(src)
        graph.replay()
        return [o.clone() for o in outs]

    def __call__(self, *args: torch.Tensor) -> Any:
        outs = self._replay(args)
        if outs is None:
            outs = self.run(*args)
        if self._out_spec is None:
            return outs[0] if len(outs) == 1 else tuple(outs)
        return pytree.tree_unflatten(outs, self._out_spec)

    def profile(self, *args: torch.Tensor, iters: int = 10) -> list[KernelProfile]:
        """Per-kernel time: CUDA events on a GPU (median of ``iters``), wall time under the interpreter."""
        bufs, outs = self._bind(args)
        fns = self._functions(outs[0].device if outs else None)
        out = []
        cuda = next(iter(bufs.values())).is_cuda if bufs else False
        for i, fn in enumerate(fns):
            times = []
            for _ in range(iters if cuda else 1):
                if cuda:
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    self._launch(i, fn, bufs)
                    e.record()
                    e.synchronize()
                    times.append(s.elapsed_time(e))
                else:
                    t0 = time.perf_counter()
                    self._launch(i, fn, bufs)
                    times.append((time.perf_counter() - t0) * 1e3)
            times.sort()
            k = self.kernels[i]
            out.append(KernelProfile(k.name, k.covers, k.grid, times[len(times) // 2]))
        return out

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs in order (the ONNX graph's output names; else the IR values)."""
        return list(self.graph.meta.get("output_names") or [str(v) for v in self.graph.outputs])

    def close(self) -> None:
        """Release the engine's resources now: every plugin runs ``terminate()`` (also done when the engine
        is garbage-collected). The engine loads its kernels again if it runs afterwards."""
        fns, self._fns = self._fns, None
        for fn in fns or []:
            if getattr(fn, "_trtjit_plugin_step", False):
                fn.release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finalizer
            pass

    def save(self, path: str, key: bytes | str | None = None) -> str:
        """Write this engine to one file (``trtjit.load`` reads it back); sign it with ``key``."""
        from trtjit.engine_file import save
        return str(save(self, path, key))

    # ------------------------------------------------------------------ inspection
    @property
    def interpreted(self) -> bool:
        return interpreting()

    def memory_plan(self) -> dict[str, int]:
        p = self.graph.meta.get("memory_plan", {})
        return {"arena_bytes": p.get("arena_bytes", 0), "naive_bytes": p.get("naive_bytes", 0)}

    def summary(self, profile: list[KernelProfile] | None = None) -> str:
        """One line per kernel: name, the IR ops it fused, launch grid, time when profiled."""
        times = {p.name: p.ms for p in profile or []}
        rows = [("kernel", "template", "fuses", "grid", "ms")]
        for k in self.kernels:
            ops = [self._op_of(k, n) for n in k.covers]
            fuses = " + ".join(ops) if len(ops) <= 6 else " + ".join(ops[:6]) + f" (+{len(ops) - 6})"
            ms = f"{times[k.name]:.3f}" if k.name in times else "-"
            rows.append((k.name, k.template, fuses, "x".join(map(str, k.grid)), ms))
        widths = [min(max(len(r[i]) for r in rows), 60) for i in range(5)]
        lines = ["  ".join(c[:60].ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        plan = self.memory_plan()
        lines.append(f"{len(self.kernels)} kernels; activation memory {plan['arena_bytes']} bytes planned "
                     f"vs {plan['naive_bytes']} one-buffer-per-tensor")
        return "\n".join(lines)

    def layers(self, *inputs: torch.Tensor, profile: list[KernelProfile] | None = None) -> Any:
        """Per-kernel table (pandas DataFrame): template, fused ops, dtype, time (when profiled: pass
        inputs or a ``profile()`` result), output bytes. See ``trtjit.display.layer_table``."""
        from trtjit.display import layer_table
        return layer_table(self, profile=profile, inputs=inputs or None)

    def precision_report(self) -> list[dict[str, Any]]:
        """Per GEMM/conv layer of an int8 build: the precision chosen (int8 or fp32) and why, the int8
        relative error measured on the calibration data, the input tensor and its scale, the fraction
        of its values clipped (``passes/quantize_int8.py``). Empty for other precisions."""
        return [dict(r) for r in self.graph.meta.get("precision_report", [])]

    def precision_table(self) -> str:
        """``precision_report()`` as a text table, one line per layer."""
        rows = [("layer", "op", "precision", "error", "scale", "clipped", "reason")]
        for r in self.precision_report():
            err, sc, cl = r.get("error"), r.get("act_scale"), r.get("clipped")
            rows.append((r["layer"], r["op"], r["precision"], "-" if err is None else f"{err:.4f}",
                         "-" if sc is None else f"{sc:.4g}", "-" if cl is None else f"{100 * cl:.2f}%", r["reason"]))
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in rows)

    def _op_of(self, k: KernelSpec, name: str) -> str:
        n = self.graph.node(k.node)
        body = n.attrs.get("body")
        if body is not None and name in body:
            return body.node(name).op
        return n.op

    def __repr__(self) -> str:
        return (f"<trtjit.Engine {len(self.kernels)} kernels, inputs "
                f"{[str(s) for s in self.input_specs]}, outputs {[str(s) for s in self.output_specs]}>")

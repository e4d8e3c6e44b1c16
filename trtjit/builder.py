"""``trtjit.compile``: module in, engine out (import, passes, codegen)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trtjit.codegen import generate
from trtjit.codegen.common import KernelSpec
from trtjit.dynamic import GuardError
from trtjit.engine import Engine
from trtjit.errors import BuildError, InputError, KernelCompileError, TrtjitError
from trtjit.frontend_torch import import_module
from trtjit.ir import Graph
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.options import BuildOptions
from trtjit.passmanager import PassContext, run_pipeline
from trtjit.pipeline import passes_for


def _check_inputs(model: Any, example_inputs: Any) -> tuple[torch.Tensor, ...]:
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"trtjit.compile expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise InputError("example_inputs must be a tensor or a tuple/list of tensors, got "
                         f"{type(example_inputs).__name__}")
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"example input {i} must be a torch.Tensor, got {type(t).__name__}")
    return tuple(example_inputs)


def compile(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor,
            options: BuildOptions | None = None, calibrator: Any = None, **overrides: Any) -> Engine:
    """Compile ``model`` for inputs shaped like ``example_inputs`` into an engine of Triton kernels.

    The model is exported in eval mode (dropout off, BatchNorm on running statistics), as an inference
    compiler must; its training flag is restored afterwards. Keyword overrides set ``BuildOptions`` fields
    (``opt_level=``, ``verify=``, ``dump_dir=``, ...).

    ``model`` may also be an ONNX model (a path, bytes or ``onnx.ModelProto``); ``example_inputs`` are then
    example tensors or shapes, in graph-input order or as ``{input name: tensor or shape}`` (see
    ``trtjit.frontend_onnx``).

    ``calibrator`` (``precision="int8"``): a ``trtjit.EntropyCalibrator`` (or MinMax, Percentile, MSE
    calibrator, or a subclass) whose batches run through the fp32 graph to choose the activation scales;
    see ``trtjit.calibration``.
    """
    from trtjit.frontend_onnx import is_onnx_model

    if is_onnx_model(model):  # ONNX frontend
        from trtjit.frontend_onnx import import_onnx

        opts = BuildOptions.make(options, **overrides)
        t0 = time.perf_counter()
        if opts.shapes:  # a batch range: imported at two batches and merged (trtjit.dynamic)
            from trtjit.dynamic import import_onnx_dynamic
            return build(import_onnx_dynamic(model, example_inputs, opts.shapes), opts, t0, calibrator=calibrator)
        return build(import_onnx(model, example_inputs), opts, t0, calibrator=calibrator)
    opts = BuildOptions.make(options, **overrides)
    args = _check_inputs(model, example_inputs)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    dynamic = _dynamic_inputs(model, args, opts)
    try:
        graph = import_module(model, args, dynamic)
    finally:
        model.train(was_training)
    if dynamic is not None:
        graph.meta["batch_range"] = dynamic.range.to_json()
    return build(graph, opts, t0, calibrator=calibrator)


def _dynamic_inputs(model: torch.nn.Module, args: tuple, opts: BuildOptions) -> Any:
    """The inputs given a batch range by ``opts.shapes`` (trtjit.dynamic), or None for a static build."""
    if not opts.shapes:
        return None
    import inspect

    from trtjit.dynamic import DynamicInputs
    try:
        names = [p for p in inspect.signature(model.forward).parameters][:len(args)]
    except (TypeError, ValueError):
        names = []
    dyn = DynamicInputs(opts.shapes, names, args)
    return dyn if dyn.range is not None else None


def build(graph: Graph, options: BuildOptions | None = None, t0: float | None = None,
          calibrator: Any = None) -> Engine:
    """Optimize an imported graph and generate its kernels (``calibrator``: see ``compile``)."""
    opts = options or BuildOptions()
    t_start = time.perf_counter()
    t0 = t_start if t0 is None else t0
    phases = {"import": t_start - t0}  # seconds per build phase, for Engine.build_phases
    ctx = PassContext(opts, calibrator=calibrator)
    if opts.precision in ("int8", "fp8"):  # the calibration cache is keyed by the imported model (trtjit.calibration)
        if graph.meta.get("batch_range"):
            raise BuildError(f"precision {opts.precision!r} with a batch range (shapes=) is not supported yet: "
                             "calibrate and build for one batch size")
        from trtjit.calibration import graph_key

        ctx.graph_key = graph_key(graph)
    if graph.meta.get("batch_range") and graph.op_counts().get("plugin"):
        raise BuildError("plugins cannot be used in a dynamic-batch engine yet (their kernels are the plugin's own "
                         "and fixed-size); build without shapes=")
    if graph.op_counts().get("plugin"):  # plugins: the builder picks each one's format (trtjit.plugins)
        from trtjit.passmanager import PassRecord
        from trtjit.plugins import configure_plugins

        n0 = len(graph)
        ctx.log.append(PassRecord("plugin_formats", n0, events=configure_plugins(graph, opts.precision),
                                  nodes_after=len(graph)))
    t1 = time.perf_counter()
    graph = run_pipeline(graph, passes_for(opts.opt_level), ctx)
    t2 = time.perf_counter()
    kernels = lower(graph, opts)
    t3 = time.perf_counter()
    phases.update(passes=t2 - t1, codegen=t3 - t2)
    _dump_kernels(kernels, opts)
    binaries = {}
    if opts.targets:  # cubin + PTX per arch, compiled in subprocesses (no GPU needed): trtjit.crosscompile
        plugged = [n for n in graph.topo_order() if graph.node(n).op == "plugin"]
        if plugged:
            raise BuildError(f"plugin node(s) {plugged} cannot be cross-compiled yet (their kernels are the "
                             "plugin's own); build without targets= and let the device JIT them")
        graph, kernels, binaries = _cross_compile(graph, kernels, opts, ctx)
    phases["cubins"] = time.perf_counter() - t3
    engine = Engine(graph, kernels, opts, ctx.log, time.perf_counter() - t0)
    engine.binaries = binaries
    engine.build_phases = phases
    return engine


def _dump_kernels(kernels: list[KernelSpec], opts: BuildOptions) -> None:
    """Each kernel's Triton source into ``opts.dump_dir`` (debug visibility), if set."""
    if opts.dump_dir:
        d = Path(opts.dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        for k in kernels:
            (d / f"kernel_{k.name}.py").write_text(k.source)


def _cross_compile(graph: Graph, kernels: list[KernelSpec], opts: BuildOptions,
                   ctx: PassContext) -> tuple[Graph, list[KernelSpec], dict[str, list[Any]]]:
    """Cubins for ``opts.targets``. Where ``gemm_tactic="auto"`` chose the ping-pong Gluon template and a Gluon
    kernel does not compile (another Triton's Gluon API, say), the build falls back as TensorRT skips a
    failing tactic: those GEMMs go back to the Triton template (the autotune pass runs again for their tiles),
    the build log's ``gemm_tactic_fallback`` record names them and the error, and the kernels compile again.
    An explicit "pingpong" keeps the error: the caller asked for that template."""
    from trtjit.codegen.gluon_gemm import is_gluon_source
    from trtjit.crosscompile import compile_kernels
    from trtjit.passes.gemm_tactic import PINGPONG
    from trtjit.passmanager import PassRecord, load_pass, run_pass

    try:
        return graph, kernels, compile_kernels(graph, kernels, opts.targets)
    except KernelCompileError as e:
        gluon_kernels = [k for k in kernels if is_gluon_source(k.source)]
        if opts.gemm_tactic != "auto" or e.kernel not in {k.name for k in gluon_kernels}:
            raise
        gluon = sorted({k.node for k in gluon_kernels})
        reason = str(e).splitlines()[0][:300]
    tiles = graph.meta.get("tiles", {})
    graph.meta["tiles"] = {n: t for n, t in tiles.items() if n not in gluon}
    # the gemm_tactic record marks its choice undone, so the build log's rule counts (trtjit inspect) tell
    # what the engine runs
    for ev in (ev for rec in ctx.log if rec.name == "gemm_tactic" for ev in rec.events):
        if ev["fired"] and ev["node"] in gluon:
            ev.update(fired=False, detail=f"chosen ({ev['detail']}), then dropped: its Gluon kernel did not "
                                          "compile (see gemm_tactic_fallback)")
    ctx.log.append(PassRecord("gemm_tactic_fallback", len(graph), len(graph), events=[
        {"rule": PINGPONG, "node": n, "fired": False,
         "detail": f"the Gluon kernel did not compile, so the Triton template: {reason}"} for n in gluon]))
    graph = run_pass(load_pass("autotune"), graph, ctx, len(ctx.log))
    kernels = lower(graph, opts)
    _dump_kernels(kernels, opts)  # the Triton kernels that replace the Gluon ones
    return graph, kernels, compile_kernels(graph, kernels, opts.targets)


def lower(graph: Graph, opts: BuildOptions) -> list[KernelSpec]:
    """One kernel per compute node, in execution order, with unique names."""
    layouts = compute_layouts(graph)
    kernels: list[KernelSpec] = []
    seen: dict[str, int] = {}
    for name in graph.topo_order():
        if not is_kernel_node(graph, name):
            continue
        try:
            if graph.node(name).op == "plugin":  # the engine calls the plugin's enqueue (trtjit.plugins)
                from trtjit.plugins import plugin_kernel_spec

                k = plugin_kernel_spec(graph, name, layouts)
            else:
                k = generate(graph, name, layouts, tf32=opts.tf32)
        except GuardError as e:  # a batch-dependent decision: name the node
            raise GuardError(f"code generation for node {name!r} ({graph.node(name).op}): {e}") from None
        except TrtjitError:
            raise
        except Exception as e:  # a template bug must still name the node
            raise TrtjitError(f"code generation failed for node {name!r} ({graph.node(name).op}): "
                              f"{type(e).__name__}: {e}") from e
        if k.name in seen:
            seen[k.name] += 1
            old = k.name
            k.name = f"{old}_{seen[old]}"
            k.source = k.source.replace(f"def {old}(", f"def {k.name}(", 1)
        seen.setdefault(k.name, 0)
        kernels.append(k)
    return kernels

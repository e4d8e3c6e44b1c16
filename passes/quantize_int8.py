"""INT8 (and FP8) post-training quantization with an automatic per-layer precision check.

Requires: composites decomposed, constants folded where the level folds, before epilogue fusion (at level
2 after merge_parallel_gemms, so a merged Q/K/V projection is one int8 layer). Does nothing unless
``precision`` is "int8". Guarantees: every matmul and conv2d whose right operand is a constant weight
(through views) and whose inputs are fp32 (or fp16/bf16, under ``fallback_precision``) is either

* int8: ``quantize(x, s_x)`` (per-tensor symmetric scale from the calibrator, shared by every layer
  reading x) feeds ``matmul``/``conv2d`` of int8 operands (exact int32 accumulation) with the weight
  quantized per output channel (symmetric, [-127, 127]); ``cast`` to fp32 and ``mul`` by the per-channel
  ``s_x * s_w`` follow (then a cast back to the layer's 16-bit dtype), so epilogue fusion puts the
  dequantize, bias, activation, residual and the next layer's ``quantize`` (requantize) into the one GEMM
  kernel; the int8 node keeps the layer's name; or
* fp32, with the reason: listed in ``keep_fp32`` (node name, name prefix or op type), no scale for its
  input in a TensorRT cache, an int32 accumulator that could overflow, or it failed the precision check
  on the calibration data (or, building from a cache alone, failed it when the cache was made: the cache
  records it): the int8 layer's output (computed exactly with the op table's references) is
  NaN/Inf or further than ``int8_tolerance`` (||int8 - fp32|| / ||fp32||) from the fp32 one. With
  ``strict_precision`` the check is reported but never moves a layer to fp32.

Explicit quantization (any precision, first): a GEMM/conv reading ``dequantize(q)`` of an int8 ``q``
(ONNX QuantizeLinear/DequantizeLinear, torch's quantize/dequantize and fake-quantize ops) with a constant
weight runs int8 on ``q`` with the graph's scale; its weight, folded to fp32 from ``dequantize(W_int8)``,
is put back on its int8 grid (``weight_grid``).

``graph.meta["precision_report"]`` lists every GEMM/conv layer: precision, reason, error, scale (also
``engine.precision_report()``); the build log records one event per layer. Other ops stay fp32.

``precision="fp8"`` does the same for matmuls in float8_e4m3fn (``quantize_fp8``, scales = threshold / 448,
per-channel e4m3 weights, fp32 accumulation, no cast before the dequantize multiply); convolutions stay
fp32. The calibration cache stores int8 scales (T / 127) either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from trtjit.codegen.common import FLOATS

from trtjit.calibration import CalibrationResult, calibrate, value_name
from trtjit.errors import CalibrationError
from trtjit.fusion import rule
from trtjit.ir import Graph, Node, Value, dtype_name
from trtjit.ops import get_op
from trtjit.options import HALF_DTYPES
from trtjit.passmanager import PassContext

INT8 = rule("calibrated GEMM/conv => int8 (or fp8) layer", "quantize_int8",
            "int8 x int8 -> int32 (or e4m3 -> fp32) tensor-core math with a fused dequantize/requantize epilogue")
RESIDUAL = rule("int8 tensor + residual add => add reads the int8 copy", "quantize_int8",
                "the block output is stored once, in int8; the shortcut add dequantizes it in its kernel")
KEEP = rule("GEMM/conv kept in fp32", "quantize_int8",
            "override, missing scale, overflow risk or a failed precision check keeps the layer in fp32")

ANCHORS = ("matmul", "conv2d")
_HALF_NAMES = {dt: name for name, dt in HALF_DTYPES.items()}  # 16-bit layers under fallback_precision
INT32_MAX = 2**31 - 1
# A conv reading fewer channels than this (an RGB stem) gathers its K dimension element by element; in int8
# that ran 5x slower than in fp16 (resnet50's 7x7 stem at batch 32 on the H200: 1.64 ms against 0.34 ms),
# so with a 16-bit fallback_precision such a layer stays 16-bit.
MIN_INT8_CHANNELS = 4  # an RGB stem (3 channels): the one case measured


@dataclass(frozen=True)
class Format:
    """A low-precision format of calibrated GEMMs: ``levels`` is the largest magnitude (the threshold T maps
    to it: scale = T / levels), ``quant_op`` the IR op that converts fp32 to it."""

    name: str
    levels: float
    quant_op: str
    dtype: torch.dtype
    convs: bool


FORMATS = {"int8": Format("int8", 127.0, "quantize", torch.int8, True),
           "fp8": Format("fp8", 448.0, "quantize_fp8", torch.float8_e4m3fn, False)}
I8 = FORMATS["int8"]


def _kept(name: str, op: str, keep: tuple[str, ...]) -> bool:
    return any(k == op or k == name or name.startswith(k + ".") for k in keep)


def _const_value(graph: Graph, v: Value) -> torch.Tensor | None:
    """The value of ``v`` when only constants feed it (weights at opt_level 0 are permuted views, and an
    explicitly quantized weight is ``dequantize(constant)``)."""
    n = graph.node(v.node)
    if n.op == "constant":
        return n.value
    if n.op == "input" or get_op(n.op).kind not in ("view", "pointwise") or len(n.outputs) != 1:
        return None
    ins = [_const_value(graph, u) for u in graph.inputs_of(n.name)]
    if any(t is None for t in ins):
        return None
    return get_op(n.op).run(ins, n.attrs)[0]


def quantize_weight(w: torch.Tensor, op: str, fmt: Format = I8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 (or e4m3) weights and their scales: matmul ``[K, N]`` per column,
    conv ``[OC, C/g, KH, KW]`` per output channel."""
    w = w.float()
    amax = w.abs().amax(dim=0) if op == "matmul" else w.abs().flatten(1).amax(dim=1)
    scale = torch.where(amax > 0, amax / fmt.levels, torch.ones_like(amax))
    shape = (1, -1) if op == "matmul" else (-1, 1, 1, 1)
    t = w / scale.reshape(shape)
    if fmt.dtype == torch.float8_e4m3fn:
        return torch.clamp(t, -fmt.levels, fmt.levels).to(fmt.dtype), scale
    return torch.clamp(torch.round(t), -127, 127).to(torch.int8), scale


def _dequant_shape(op: str, n: int) -> list[int]:
    return [n] if op == "matmul" else [1, n, 1, 1]


def _check(op: str, attrs: dict, w: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor, sa: float,
           xs: list[torch.Tensor], fmt: Format = I8) -> tuple[float | None, bool, float]:
    """(relative error, all finite, clipped fraction) of the low-precision layer against fp32 on ``xs``."""
    if not xs:
        return None, True, 0.0
    ref, quant = get_op(op), get_op(fmt.quant_op)
    num = den = 0.0
    finite, clipped, total = True, 0, 0
    scale = (sa * sw).reshape(_dequant_shape(op, sw.numel()))
    for x in xs:
        y = ref.run([x.float(), w.float()], attrs)[0].double()
        xq = quant.run([x], {"scale": sa})[0]
        yq = ref.run([xq, wq], attrs)[0].float() * scale
        finite = finite and bool(torch.isfinite(yq).all())
        num += float(((yq.double() - y) ** 2).sum())
        den += float((y ** 2).sum())
        clipped += int((x.abs() / sa > fmt.levels + (0.5 if fmt is I8 else 0.0)).sum())
        total += x.numel()
    err = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
    return err, finite, clipped / max(total, 1)


def weight_grid(w: torch.Tensor, op: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """int8 weights of an explicitly quantized layer: its weight is ``dequantize(W_int8)`` folded to fp32,
    so find the grid it lies on (per tensor, then per output channel, scale = max |w| / 127 as exporters
    choose it) and recover W_int8 exactly; off-grid weights are quantized per channel afresh."""
    wq, sw = quantize_weight(w, op)
    shape = (1, -1) if op == "matmul" else (-1, 1, 1, 1)
    amax = float(w.abs().max())
    if amax > 0:
        st = amax / 127.0
        r = w.double() / st
        if float((r - r.round()).abs().max()) < 1e-3:
            n = w.shape[1] if op == "matmul" else w.shape[0]
            return torch.clamp(r.round(), -127, 127).to(torch.int8), torch.full((n,), st), "per-tensor weight grid"
    r = w.double() / sw.double().reshape(shape)
    if float((r - r.round()).abs().max()) < 1e-3:
        return wq, sw, "per-channel weight grid"
    return wq, sw, "weights re-quantized per channel (not on an int8 grid)"


def _cache_names(graph: Graph) -> dict[Value, str]:
    """Calibration-cache names of values imported from ONNX: the ONNX tensor names (TensorRT's), so caches
    move between trtjit and TensorRT; other values go by ``value_name``."""
    out: dict[Value, str] = {}
    for tensor, (node, index) in graph.meta.get("onnx_tensors", {}).items():
        v = Value(node, int(index))
        if node in graph and v not in out:
            out[v] = tensor
    # a float -> float cast (fallback_precision's input casts) carries its source's name: the tensor is the
    # same up to rounding, so an fp32-calibrated cache serves the 16-bit build too
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op == "cast" and n.spec.dtype.is_floating_point:
            src = graph.inputs_of(name)[0]
            if graph.spec(src).dtype.is_floating_point:
                out.setdefault(Value(name), out.get(src, value_name(src)))
    return out


def explicit_int8_input(graph: Graph, a: Value) -> tuple[list[Node], Node] | None:
    """(views, dequantize) when the GEMM/conv operand ``a`` is ``dequantize`` of an int8 tensor, through views
    (dequantize commutes with flatten and the like): an explicitly quantized (Q/DQ) layer's input."""
    views, v = [], a
    while get_op(graph.node(v.node).op).kind == "view":
        views.append(graph.node(v.node))
        v = graph.inputs_of(v.node)[0]
    dq = graph.node(v.node)
    if dq.op != "dequantize" or graph.spec(graph.inputs_of(dq.name)[0]).dtype != torch.int8:
        return None
    return views, dq


def _explicit(graph: Graph, ctx: PassContext, report: list[dict]) -> None:
    """Explicit quantization (any precision): a GEMM/conv reading ``dequantize(q)`` of an int8 ``q`` with a
    constant weight runs int8 on ``q`` with the graph's scale; the dequantize disappears."""
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op not in ANCHORS:
            continue
        a, b = graph.inputs_of(name)
        found = explicit_int8_input(graph, a)
        if found is None:
            continue
        views, dq = found
        w = _const_value(graph, b)
        if w is None or w.dtype != torch.float32 or (n.op == "matmul" and w.dim() != 2):
            report.append({"layer": name, "op": n.op, "precision": "fp32",
                           "reason": "explicit Q/DQ input but no constant fp32 weight to run int8 with"})
            ctx.skipped(KEEP, name, report[-1]["reason"])
            continue
        sa = float(dq.attrs["scale"])
        wq, sw, how = weight_grid(w, n.op)
        reason = f"explicit Q/DQ (scale from the graph, {how})"
        report.append({"layer": name, "op": n.op, "precision": "int8", "reason": reason, "tensor": value_name(a),
                       "act_scale": sa, "error": None, "clipped": None})
        q = graph.inputs_of(dq.name)[0]
        for view in reversed(views):  # the same views of the int8 tensor
            q = Value(graph.add(view.op, [q], dict(view.attrs), name=f"{view.name}.int8", source=view.source).name)
        _rewrite(graph, name, n.op, a, b, wq, sa, sw, {a: q})
        _drop_dead(graph, a.node)
        ctx.fired(INT8, name, f"{n.op}: {reason}")


def run(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    report: list[dict] = []
    if any(graph.node(n).op == "dequantize" for n in graph.nx):
        _explicit(graph, ctx, report)
    if opts.precision not in FORMATS:
        if report:
            graph.meta["precision_report"] = report
        return graph
    fmt = FORMATS[opts.precision]
    if fmt.name == "fp8" and not opts.targets and torch.cuda.is_available() and \
            torch.cuda.get_device_capability() < (8, 9):
        raise CalibrationError(f"precision 'fp8' needs fp8 tensor cores (sm_89 or newer); this GPU is "
                               f"sm_{''.join(map(str, torch.cuda.get_device_capability()))}: use precision='int8'")
    keep = tuple(opts.keep_fp32)
    layers = []
    done = {r["layer"] for r in report}

    def fp32(name: str, op: str, reason: str, **extra: object) -> None:
        """The layer stays in the graph's float precision (fp32, or the 16-bit fallback_precision)."""
        prec = _HALF_NAMES.get(graph.node(name).spec.dtype, "fp32")
        report.append({"layer": name, "op": op, "precision": prec, "reason": reason} | extra)
        ctx.skipped(KEEP, name, reason)

    for name in graph.topo_order():
        n = graph.node(name)
        if n.op == "conv_transpose2d":
            fp32(name, n.op, "no int8 kernel for transposed convolutions")
        if n.op not in ANCHORS or name in done:
            continue
        if n.op == "conv2d" and not fmt.convs:
            fp32(name, n.op, f"no {fmt.name} convolution kernel")
            continue
        a, b = graph.inputs_of(name)
        if graph.spec(a).dtype not in FLOATS or graph.spec(b).dtype not in FLOATS:
            fp32(name, n.op, f"operands are {graph.spec(a).dtype} and {graph.spec(b).dtype}, not float32/16")
            continue
        w = _const_value(graph, b)
        if w is None:
            fp32(name, n.op, "both operands are activations (no constant weight to quantize)")
            continue
        if n.op == "matmul" and w.dim() != 2:
            fp32(name, n.op, f"weight of rank {w.dim()} (per-channel int8 needs a [K, N] weight)")
            continue
        if _kept(name, n.op, keep):
            fp32(name, n.op, "keep_fp32 override")
            continue
        cin = w.shape[1] if n.op == "conv2d" and n.attrs["groups"] == 1 else None  # depthwise: its own loop
        if cin is not None and cin < MIN_INT8_CHANNELS and graph.spec(a).dtype != torch.float32:
            fp32(name, n.op, f"{cin} input channels: too few for int8 tensor-core tiles; the 16-bit "
                 "fallback_precision layer is faster")
            continue
        k = w.shape[0] if n.op == "matmul" else w[0].numel()
        if fmt is I8 and k * 127 * 128 > INT32_MAX:
            fp32(name, n.op, f"reduction of {k} int8 products could overflow the int32 accumulator")
            continue
        layers.append((name, n.op, a, b, w))
    if not layers:
        graph.meta["precision_report"] = report
        return graph
    if ctx.calibrator is None:
        raise CalibrationError(f"precision='{fmt.name}' needs calibration data for {len(layers)} layer(s) "
                               f"({', '.join(x[0] for x in layers[:4])}{', ...' if len(layers) > 4 else ''}): pass "
                               "calibrator=trtjit.EntropyCalibrator(batches) (or a calibrator with cache=) to "
                               "trtjit.compile, or keep them in fp32 with keep_fp32")
    names = _cache_names(graph)
    tensors = {names.get(a, value_name(a)): a for _, _, a, _, _ in layers}
    result = calibrate(ctx.calibrator, graph, tensors, ctx.graph_key)
    for note in result.notes:
        ctx.skipped(KEEP, "calibration", note)
    quantized: dict[Value, Value] = {}
    for name, op, a, b, w in layers:
        n = graph.node(name)
        tname = names.get(a, value_name(a))
        sa = result.scales.get(tname)
        if sa is None:
            fp32(name, op, f"no scale for its input {tname!r} in the calibration cache", tensor=tname)
            continue
        sa = sa if fmt is I8 else float(sa * 127.0 / fmt.levels)  # the cache holds int8 scales (T / 127)
        wq, sw = quantize_weight(w, op, fmt)
        err, finite, clipped = _check(op, n.attrs, w, wq, sw, sa, [s[tname] for s in result.samples], fmt)
        extra = {"tensor": tname, "act_scale": sa, "error": err, "clipped": clipped}
        bad = None
        if name in result.fp32_layers:
            bad = (f"kept out of int8 by the calibration cache (int8 relative error "
                   f"{result.fp32_layers[name]:.3g} when calibrated)")
        elif not finite:
            bad = f"{fmt.name} output has NaN/Inf on the calibration data"
        elif err is not None and err > opts.int8_tolerance:
            bad = f"{fmt.name} relative error {err:.3g} > int8_tolerance {opts.int8_tolerance:g}"
        if bad and not opts.strict_precision:
            if result.new_cache is not None:
                result.new_cache.fp32_layers[name] = err if err is not None and math.isfinite(err) else 1e30
            fp32(name, op, bad, **extra)
            continue
        if err is None:
            reason = "calibrated (not checked: no calibration data, scales from the cache)"
        else:
            reason = f"{fmt.name} relative error {err:.3g} <= {opts.int8_tolerance:g}" if not bad else \
                f"strict_precision: kept {fmt.name} although {bad}"
        report.append({"layer": name, "op": op, "precision": fmt.name, "reason": reason} | extra)
        _rewrite(graph, name, op, a, b, wq, sa, sw, quantized, fmt)
        ctx.fired(INT8, name, f"{op}: {reason}")
    if fmt is I8:
        _int8_residuals(graph, quantized, ctx, keep, result, names)
    result.save(ctx.calibrator)
    order = {n: i for i, n in enumerate(graph.topo_order())}
    report.sort(key=lambda r: order.get(r["layer"], len(order)))
    graph.meta["precision_report"] = report
    graph.meta["calibration"] = {"algorithm": result.algorithm, "source": result.source, "batches": result.batches}
    return graph


def _rewrite(graph: Graph, name: str, op: str, a: Value, b: Value, wq: torch.Tensor, sa: float,
             sw: torch.Tensor, quantized: dict[Value, Value], fmt: Format = I8) -> None:
    """matmul/conv(x, W) => mul(cast(op(quantize(x), W_int8), fp32), s_x * s_w), the int8 node named
    like the layer."""
    n = graph.node(name)
    src = n.source
    q = quantized.get(a)
    if q is None:
        q = quantized[a] = _quantize_at_source(graph, a, sa, fmt, quantized)
    if op == "matmul":  # stored [N, K] and read through a transposed view: 8-bit MMAs take B K-major
        wt = graph.add_constant(f"{name}.weight_{fmt.name}_nk", wq.t().contiguous(), source=src)
        wc = Value(graph.add("permute", [wt], {"dims": [1, 0]}, name=f"{name}.weight_{fmt.name}", source=src).name)
    else:
        wc = graph.add_constant(f"{name}.weight_{fmt.name}", wq, source=src)
    acc = graph.add(op, [q, wc], dict(n.attrs), name=f"{name}.{fmt.name}_acc", source=src)
    f = Value(acc.name)
    if acc.spec.dtype != torch.float32:  # int32 accumulator (fp8 GEMMs accumulate in fp32 already)
        f = Value(graph.add("cast", [f], {"dtype": "float32"}, name=f"{name}.dequant_cast", source=src).name)
    sc = graph.add_constant(f"{name}.dequant_scale", (sa * sw).float().reshape(_dequant_shape(op, sw.numel())),
                            source=src)
    y = graph.add("mul", [f, sc], name=f"{name}.dequant", source=src)
    if n.spec.dtype != torch.float32:  # a 16-bit layer: its output keeps the graph's dtype (fallback_precision)
        y = graph.add("cast", [Value(y.name)], {"dtype": dtype_name(n.spec.dtype)}, name=f"{name}.dequant_out",
                      source=src)
    graph.replace_all_uses(Value(name), Value(y.name))
    graph.remove_node(name)
    graph.rename(acc.name, name)
    _drop_dead(graph, b.node)
    if a.node != q.node:
        _drop_dead(graph, a.node)  # the fp32 views the int8 ones replace


SIZE_PRESERVING_VIEWS = ("reshape", "permute", "squeeze", "unsqueeze")


def _quantize_at_source(graph: Graph, a: Value, sa: float, fmt: Format, quantized: dict[Value, Value]) -> Value:
    """``quantize(a)``, placed above the reshapes/permutes ``a`` comes through (a per-tensor quantize commutes
    with them), so epilogue fusion stores the int8 tensor from the kernel that computes it instead of a
    separate kernel re-reading fp32 (attention output -> out projection, flatten -> classifier)."""
    views, v = [], a
    while graph.node(v.node).op in SIZE_PRESERVING_VIEWS:
        views.append(graph.node(v.node))
        v = graph.inputs_of(v.node)[0]
    if graph.spec(v).dtype not in FLOATS:
        views, v = [], a
    q = quantized.get(v)
    if q is None:
        q = quantized[v] = Value(graph.add(fmt.quant_op, [v], {"scale": sa}, name=f"{value_name(v)}.{fmt.name}",
                                           source=graph.node(v.node).source).name)
    for view in reversed(views):
        q = Value(graph.add(view.op, [q], dict(view.attrs), name=f"{view.name}.{fmt.name}", source=view.source).name)
    return q


def _int8_residuals(graph: Graph, quantized: dict[Value, Value], ctx: PassContext, keep: tuple[str, ...],
                    result: CalibrationResult, names: dict[Value, str]) -> None:
    """A tensor quantized for the next int8 layer that is otherwise only read by residual adds (a ResNet
    block's output: the next block's first conv and its shortcut) is read by those adds as ``dequantize`` of
    the int8 copy, as TensorRT's int8 residual fusion does. The kernel computing it then stores the int8
    tensor alone, and the add's kernel loads one byte per element instead of two: those layers are
    memory-bound (resnet50's layer1 convs at batch 32 move 134 MB each with the 16-bit copy, 58 MB without).

    The shortcut then carries the int8 rounding of the tensor (half a step of its per-tensor scale). Like a
    layer, it must stay within ``int8_tolerance`` on the calibration data (relative error; ``strict_precision``
    applies it regardless), and the decision is recorded in the calibration cache (``shortcut/<tensor>``
    among the layers kept in float), so a build from the cache alone decides the same. It is done for
    convolutional feature maps only: in a transformer block (tests/test_int8.py) the residual stream's
    outliers took the output error from under 5% to 5.5-7.4%. ``keep_fp32`` naming the add (or "add") keeps
    the shortcut in float."""
    opts = ctx.options
    for t, q in quantized.items():
        if q.node not in graph or graph.node(q.node).op != "quantize" or graph.inputs_of(q.node)[0] != t:
            continue  # quantized through views (a flatten before a classifier): not a residual stream
        reads = [(u, i) for u, i in graph.users(t) if u != q.node]
        users = list(dict.fromkeys(u for u, _ in reads))
        if not users or graph.is_output(t):
            continue
        shape = graph.spec(t).shape
        if len(shape) != 4 or not all(graph.node(c).op == "conv2d" for c, _ in graph.users(q)):
            continue  # a transformer's residual stream has outliers a per-tensor int8 scale would crush
        if not all(graph.node(u).op == "add" and graph.node(u).spec.shape == shape for u in users):
            ctx.skipped(RESIDUAL, t.node, "read by other ops than a residual add: its float copy stays")
            continue
        if any(_kept(u, "add", keep) for u in users):
            ctx.skipped(RESIDUAL, t.node, "keep_fp32 override of its residual add")
            continue
        tname = names.get(t, value_name(t))
        key = f"shortcut/{tname}"
        scale = graph.node(q.node).attrs["scale"]
        err = _rounding_error([smp[tname] for smp in result.samples if tname in smp], scale)
        bad = None
        if key in result.fp32_layers:
            bad = f"kept in float by the calibration cache (int8 relative error {result.fp32_layers[key]:.3g})"
        elif err is not None and err > opts.int8_tolerance:
            bad = f"int8 relative error of the shortcut {err:.3g} > int8_tolerance {opts.int8_tolerance:g}"
            if result.new_cache is not None and not opts.strict_precision:
                result.new_cache.fp32_layers[key] = err
        if bad and not opts.strict_precision:
            ctx.skipped(RESIDUAL, t.node, bad)
            continue
        src = graph.node(t.node).source
        for j, (u, i) in enumerate(reads):
            # one dequantize per read: each add's kernel takes its own into its epilogue (fuse_gemm_epilogue)
            sfx = f".dq{j}" if j else ".dq"
            dq = Value(graph.add("dequantize", [q], {"scale": scale}, name=f"{q.node}{sfx}", source=src).name)
            if graph.spec(t).dtype != torch.float32:
                dq = Value(graph.add("cast", [dq], {"dtype": dtype_name(graph.spec(t).dtype)},
                                     name=f"{q.node}{sfx}_out", source=src).name)
            graph.set_input(u, i, dq)
        note = f"strict_precision: although {bad}" if bad else (
            f"int8 relative error {err:.3g} on the calibration data" if err is not None else "not checked: no data")
        ctx.fired(RESIDUAL, t.node, f"{', '.join(users)} read the int8 {q.node} ({note})")


def _rounding_error(xs: list[torch.Tensor], scale: float) -> float | None:
    """Largest ||dequantize(quantize(x)) - x|| / ||x|| over calibration samples ``xs`` (None without any)."""
    worst = None
    for x in xs:
        x = x.double()
        back = get_op("dequantize").run([get_op("quantize").run([x.float()], {"scale": scale})[0]],
                                        {"scale": scale})[0].double()
        e = float((back - x).norm() / x.norm().clamp_min(1e-30))
        worst = e if worst is None else max(worst, e)
    return worst


def _drop_dead(graph: Graph, name: str) -> None:
    """Remove the fp32 weight (and the views of it) nothing reads any more."""
    while name in graph and not graph.users(name) and not graph.is_output(name):
        ins = graph.producers(name)
        graph.remove_node(name)
        if len(ins) != 1:
            return
        name = ins[0]

"""Precision assignment: run the graph's float32 tensors in fp16 or bf16.

Requires: composites decomposed and constants folded (BatchNorm folded in fp32 first); before
``quantize_int8``. Guarantees: with ``precision`` "fp16"/"bf16" (or "int8"/"fp8" with that
``fallback_precision``: the int8 pass then quantizes the 16-bit GEMMs), every float32 weight is converted
(a constant with finite values beyond the 16-bit range, an attention mask's -1e5 or finfo(float32).min fill,
stays fp32: it would become -inf, and 0 * -inf NaN),
float32 graph inputs are cast on entry and outputs cast back (the caller's dtypes are kept), and every op's output spec is re-inferred, so
intermediate tensors are stored in 16 bits (kernels still accumulate and reduce in fp32). Ops named in
``keep_fp32`` (node names, name prefixes or op types, e.g. "layer_norm" parts via their names, or
"mean") compute in fp32: their inputs are cast up and their outputs back down. With "fp32" it does nothing.
"""

from __future__ import annotations

import torch
from trtjit.passes.quantize_int8 import ANCHORS, explicit_int8_input

from trtjit.errors import BuildError
from trtjit.fusion import rule
from trtjit.ir import Graph, TensorSpec, Value, dtype_name
from trtjit.ops import get_op
from trtjit.options import HALF_DTYPES
from trtjit.passmanager import PassContext

LOWER = rule("fp32 tensor => 16-bit storage", "assign_precision", "halve memory traffic; math stays fp32 in kernels")
KEEP = rule("keep_fp32 override => fp32 layer", "assign_precision", "a per-layer override keeps this op in fp32")
RANGE = rule("fp32 constant beyond 16-bit range => fp32 constant", "assign_precision",
             "an attention mask's -1e5 or finfo(float32).min fill would become -inf (and 0 * -inf = NaN)")
OPERANDS = rule("fp32 operand of a 16-bit GEMM => 16-bit operand", "assign_precision",
                "a GEMM, conv or attention multiplies one operand type")

def _kept(name: str, op: str, keep: tuple[str, ...]) -> bool:
    return any(k == op or k == name or name.startswith(k + ".") for k in keep)


def _overflows(t: torch.Tensor, target: torch.dtype) -> bool:
    """Whether ``t`` holds finite values ``target`` would turn into infinities."""
    return bool((torch.isfinite(t) & ~torch.isfinite(t.to(target))).any())


def _explicit_int8_weights(graph: Graph) -> dict[str, str]:
    """GEMM/conv -> its constant weight, for layers reading ``dequantize`` of an int8 tensor (explicit Q/DQ,
    through views): ``quantize_int8`` runs them int8 with the graph's scales and needs the weight as the
    fp32 values on the int8 grid, so neither is lowered here."""
    out = {}
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op not in ANCHORS or len(graph.inputs_of(name)) != 2:
            continue
        a, w = graph.inputs_of(name)
        if explicit_int8_input(graph, a) is not None and graph.node(w.node).op == "constant":
            out[name] = w.node
    return out


def _lower_fp32_operands(graph: Graph, name: str, target: torch.dtype, ctx: PassContext) -> None:
    """A GEMM/conv/attention reading fp32 next to 16-bit operands (an fp32 made inside the model from a
    non-float tensor: ``conv(x.float())`` of a uint8 image) reads them in 16 bits, as every other fp32 tensor
    is stored: its tensor-core math takes one operand type. An attention's mask (added to the scores in fp32,
    its finite minimum kept finite) is not such an operand."""
    ins = graph.inputs_of(name)[:3] if graph.node(name).op == "sdpa" else graph.inputs_of(name)
    if not any(graph.spec(v).dtype == target for v in ins):
        return
    for i, v in enumerate(ins):
        if graph.spec(v).dtype != torch.float32:
            continue
        src = graph.node(v.node)
        if src.op == "constant" and _overflows(src.value, target):
            raise BuildError(f"node {name!r}: its operand {v.node!r} has values up to "
                             f"{float(src.value.abs().max()):.3g}, beyond {dtype_name(target)}'s range; keep this "
                             f"layer in fp32 (keep_fp32=[{name!r}]) or build in bf16")
        cast = graph.add("cast", [v], {"dtype": dtype_name(target)}, name=f"{name}.in{i}_{dtype_name(target)}",
                         source=graph.node(name).source)
        graph.set_input(name, i, Value(cast.name))
        ctx.fired(OPERANDS, name, f"input {i} ({v.node}) read in {dtype_name(target)}")


def run(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    label = opts.precision if opts.precision not in ("int8", "fp8") else opts.fallback_precision
    target = HALF_DTYPES.get(label)
    if target is None:
        return graph
    keep = tuple(ctx.options.keep_fp32)
    original_out = [graph.spec(v) for v in graph.outputs]
    explicit = _explicit_int8_weights(graph)
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op == "constant":
            if n.value.dtype == torch.float32 and name not in explicit.values():
                if _overflows(n.value, target):  # a mask fill of -1e5 or finfo(float32).min: never -inf
                    ctx.fired(RANGE, name, f"|values| up to {float(n.value.abs().max()):.3g} exceed "
                              f"{dtype_name(target)}: kept fp32")
                    continue
                n.value = n.value.to(target)
                n.outputs = [TensorSpec.of(n.value)]
            continue
        if n.op == "input":
            if n.spec.dtype == torch.float32:
                users = graph.users(Value(name))
                cast = graph.add("cast", [Value(name)], {"dtype": dtype_name(target)}, name=f"{name}.{label}")
                for u, i in users:
                    graph.set_input(u, i, Value(cast.name))
                graph.outputs = [Value(cast.name) if o == Value(name) else o for o in graph.outputs]
                ctx.fired(LOWER, name, "input cast")
            continue
        opdef = get_op(n.op)
        if _kept(name, n.op, keep) and any(graph.spec(v).dtype == target for v in graph.inputs_of(name)):
            for i, v in enumerate(graph.inputs_of(name)):
                if graph.spec(v).dtype != target:
                    continue
                src = graph.node(v.node)
                if src.op == "constant":
                    up = graph.add_constant(f"{src.name}.fp32", src.value.float(), source=src.source)
                else:
                    up = Value(graph.add("cast", [v], {"dtype": "float32"}, name=f"{name}.in{i}_fp32",
                                         source=n.source).name)
                graph.set_input(name, i, up)
            n.outputs = opdef.infer([graph.spec(v) for v in graph.inputs_of(name)], n.attrs)
            for i, spec in enumerate(n.outputs):
                if spec.dtype == torch.float32:
                    users = graph.users(Value(name, i))
                    down = graph.add("cast", [Value(name, i)], {"dtype": dtype_name(target)}, name=f"{name}.out{i}",
                                     source=n.source)
                    for u, j in users:
                        graph.set_input(u, j, Value(down.name))
                    graph.outputs = [Value(down.name) if o == Value(name, i) else o for o in graph.outputs]
            ctx.fired(KEEP, name, n.op)
            continue
        if opdef.kind in ("gemm", "conv", "attention") and name not in explicit:
            _lower_fp32_operands(graph, name, target, ctx)
        before = list(n.outputs)
        n.outputs = opdef.infer([graph.spec(v) for v in graph.inputs_of(name)], n.attrs)
        if n.outputs != before:
            ctx.fired(LOWER, name, n.op)
    outs = []
    for v, want in zip(graph.outputs, original_out):
        if graph.spec(v).dtype != want.dtype and want.dtype == torch.float32:
            v = Value(graph.add("cast", [v], {"dtype": "float32"}, name=f"{v.node}.fp32").name)
        outs.append(v)
    graph.outputs = outs
    return graph

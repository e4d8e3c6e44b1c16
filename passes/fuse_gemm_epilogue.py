"""GEMM and convolution epilogue fusion.

Requires: composites decomposed (linear is matmul + add). Guarantees: every matmul and conv2d becomes a
``fused_gemm`` node whose body is the GEMM plus the longest chain of pointwise ops (any DAG of them) that
consume its result at its full output shape (bias, scaling, activation, residual add, GELU's several uses
of x), so the tile is written once; values also used outside become extra outputs. Growth stops (the
reason is logged) at ops that are not pointwise, change the shape, or would create a cycle. A last op
that only feeds a row reduction while its input is stored anyway (RMSNorm's square of the residual sum)
is left to that reduction's prologue: taking it would store one more tensor for nothing.
"""

from __future__ import annotations

import math

from trtjit.fusion import creates_cycle, fuse_group, rule, single_use
from trtjit.ir import Graph, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

GEMM = rule("matmul + epilogue (bias, scale, activation, residual add) => gemm epilogue", "fuse_gemm_epilogue",
            "pointwise ops on a matmul result run on the accumulator before the single store")
CONV = rule("conv + epilogue (bias, activation, residual add) => conv epilogue", "fuse_gemm_epilogue",
            "pointwise ops on a convolution result run on the accumulator before the single store")


def _anchor_role(graph: Graph, name: str) -> str:
    n = graph.node(name)
    if n.op == "conv2d" and n.attrs["groups"] > 1 and n.attrs["groups"] == n.spec.shape[1] == \
            graph.spec(graph.inputs_of(name)[0]).shape[1]:
        return "depthwise conv2d"
    return n.op


def _role(graph: Graph, name: str, tail: Value, out_shape: tuple[int, ...]) -> str:
    n = graph.node(name)
    others = [v for v in graph.inputs_of(name) if v != tail]
    if not others:
        return n.op
    big = [v for v in others if graph.spec(v).numel == graph.spec(tail).numel and graph.spec(v).shape == out_shape]
    if n.op in ("add", "sub"):
        return "residual add" if big else "bias"
    if n.op in ("mul", "div") and all(graph.spec(v).numel == 1 for v in others):
        return "scale"
    if n.op == "mul" and big and all(graph.node(v.node).op in ("matmul", "fused_gemm") for v in big):
        return "gated product"  # SwiGLU / GEGLU: act(x @ Wg) * (x @ Wu)
    return n.op


def _row_kernel(graph: Graph, red: str) -> bool:
    """Whether ``fuse_reductions`` will build a row kernel (and so can take a prologue) for ``red``."""
    shape, dims = graph.spec(graph.inputs_of(red)[0]).shape, graph.node(red).attrs["dims"]
    return bool(dims) and math.prod(shape[d] for d in dims) > 1


def _prologue_leaves(graph: Graph, gset: set[str], anchor: str) -> list[tuple[str, str]]:
    """Leaves of the epilogue (no user inside it) whose only users are reductions and whose inputs from the
    group are stored anyway: (node, reduction) pairs to hand to ``fuse_reductions`` as its prologue."""
    out = []
    for u in gset - {anchor}:
        users = graph.consumers(u)
        if graph.is_output(u) or not users or any(c in gset for c in users):
            continue
        if not all(get_op(graph.node(c).op).kind == "reduction" and _row_kernel(graph, c) for c in users):
            continue
        tails = [v for v in graph.inputs_of(u) if v.node in gset]
        if all(graph.is_output(v) or any(w not in gset and w != u for w, _ in graph.users(v)) for v in tails):
            out.append((u, users[0]))
    return out


def _dequantized_side_input(graph: Graph, u: str, gset: set[str], out_shape: tuple[int, ...]) -> list[str]:
    """The ``dequantize`` (and its cast to 16 bits) of an int8 tensor that ``u`` adds to the GEMM result (an
    int8 residual, ``quantize_int8``; explicit Q/DQ): taken into the epilogue, so the kernel loads the int8
    tensor itself instead of a float copy a separate kernel would write."""
    for v in graph.inputs_of(u):
        chain, p = [], v.node
        while p not in gset and graph.node(p).op in ("cast", "dequantize") and single_use(graph, Value(p)) \
                and graph.node(p).spec.shape == out_shape:
            chain.append(p)
            if graph.node(p).op == "dequantize":
                return chain if not creates_cycle(graph, gset | set(chain)) else []
            p = graph.inputs_of(p)[0].node
    return []


def _feeds_adds(graph: Graph, name: str) -> bool:
    """Whether the dequantize ``name`` feeds one ``add`` alone (through single-use casts): that add takes it
    into its own epilogue (``_dequantized_side_input``), so storing it in float here would be wasted."""
    while graph.node(name).op in ("dequantize", "cast"):
        if not single_use(graph, Value(name)):
            return False
        name = graph.users(Value(name))[0][0]
    return graph.node(name).op == "add"


def run(graph: Graph, ctx: PassContext) -> Graph:
    for anchor in graph.topo_order():
        if anchor not in graph or graph.node(anchor).op not in ("matmul", "conv2d", "conv_transpose2d"):
            continue
        rule_name = GEMM if graph.node(anchor).op == "matmul" else CONV
        out_shape = graph.node(anchor).spec.shape
        group, gset, parts, reasons = [anchor], {anchor}, [_anchor_role(graph, anchor)], []
        changed = True
        while changed:
            changed = False
            for g in list(group):
                for u in graph.consumers(g):
                    if u in gset:
                        continue
                    un = graph.node(u)
                    if get_op(un.op).kind != "pointwise":
                        reasons.append(f"{u!r} is {un.op}, not pointwise")
                    elif un.op == "dequantize" and _feeds_adds(graph, u):  # see _dequantized_side_input
                        reasons.append(f"{u!r} dequantizes the int8 output for residual adds: they load the int8")
                    elif un.spec.shape != out_shape:
                        reasons.append(f"{u!r} changes the shape to {list(un.spec.shape)}")
                    elif creates_cycle(graph, gset | {u}):
                        reasons.append(f"fusing {u!r} would create a cycle")
                    else:
                        tail = next(v for v in graph.inputs_of(u) if v.node in gset)
                        parts.append(_role(graph, u, tail, out_shape))
                        group.append(u)
                        gset.add(u)
                        changed = True
                        side = _dequantized_side_input(graph, u, gset, out_shape)
                        if side:
                            parts.extend("int8 shortcut" if graph.node(n).op == "dequantize" else "cast" for n in side)
                            group.extend(side)
                            gset.update(side)
        for u, red in _prologue_leaves(graph, gset, anchor):
            gset.discard(u)
            reasons.append(f"{u!r} only feeds the reduction {red!r}: left to its prologue")
        parts = [p for p, n in zip(parts, group) if n in gset]
        group = [n for n in graph.topo_order() if n in gset]
        reason = "; ".join(dict.fromkeys(reasons)) or "the result has no other consumer"
        if len(group) > 1 and reasons:
            ctx.skipped(rule_name, anchor, f"epilogue stops: {reason}")
        kind = "gemm" if graph.node(anchor).op == "matmul" else "conv"
        fuse_group(graph, group, "fused_gemm", anchor, f"{kind}_{graph.node(anchor).source or anchor}", [rule_name] if len(group) > 1 else [])
        ctx.fired(rule_name, anchor, " + ".join(parts)) if len(group) > 1 else ctx.skipped(
            rule_name, anchor, f"no epilogue: {reason}")
    return graph

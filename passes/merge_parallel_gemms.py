"""Horizontal GEMM fusion: matmuls that read the same activation with constant weights become one.

Requires: composites decomposed and constants folded (a linear is ``matmul(x, W^T)`` with a constant
``W^T`` and, usually, ``add(·, constant bias)``), before epilogue fusion. Guarantees: every group of two or
more such matmuls on the same input (BERT's query, key and value projections) is one matmul with the
weights concatenated along N, followed by one bias add when every member had one; each original result
becomes a slice view of the merged result. One wide GEMM fills the GPU better than three narrow ones and
saves two launches per group. Gated pairs (SwiGLU's ``silu(x @ Wg) * (x @ Wu)``, GEGLU) stay apart, with
the reason logged: each then fuses its half of the gate into its own epilogue, which stores one tensor
instead of the wide product plus a separate pointwise kernel.
"""

from __future__ import annotations

import torch

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

MERGE = rule("parallel matmuls on one input => one wide matmul", "merge_parallel_gemms",
             "Q/K/V-style projections share one read of the activation and one launch")


def _const(graph: Graph, v: Value) -> torch.Tensor | None:
    n = graph.node(v.node)
    return n.value if n.op == "constant" else None


def _bias(graph: Graph, mm: str) -> tuple[str, torch.Tensor] | None:
    """The single ``add(mm, constant [N])`` consuming ``mm``, if that is its only use."""
    users = graph.users(Value(mm))
    if len(users) != 1 or graph.is_output(Value(mm)):
        return None
    add = graph.node(users[0][0])
    if add.op != "add":
        return None
    other = [v for v in graph.inputs_of(add.name) if v != Value(mm)]
    b = _const(graph, other[0]) if len(other) == 1 else None
    if b is None or b.dim() != 1 or b.shape[0] != graph.node(mm).spec.shape[-1]:
        return None
    return add.name, b


GATED = rule("gate GEMM + up GEMM (silu(g) * u) => kept apart for epilogue fusion", "merge_parallel_gemms",
             "the gate's activation and the product run in the two GEMMs' epilogues, not in a pointwise kernel")


def _result(graph: Graph, mm: str) -> Value:
    b = _bias(graph, mm)
    return Value(b[0]) if b else Value(mm)


def _gated_pairs(graph: Graph, members: list[str]) -> dict[str, str]:
    """member -> its partner, for members whose results (optionally through one unary pointwise op used
    only there) are multiplied together: a gated MLP."""
    by_value = {_result(graph, m): m for m in members}
    pairs: dict[str, str] = {}
    for v, m in by_value.items():
        for user, _ in graph.users(v):
            un = graph.node(user)
            src = v
            if len(graph.inputs_of(user)) == 1 and get_op(un.op).kind == "pointwise" and len(graph.users(Value(user))) == 1:
                src, un = Value(user), graph.node(graph.users(Value(user))[0][0])
            if un.op != "mul":
                continue
            other = [w for w in graph.inputs_of(un.name) if w != src]
            partner = by_value.get(other[0]) if len(other) == 1 else None
            if partner is not None and partner != m and m not in pairs and partner not in pairs:
                pairs[m], pairs[partner] = partner, m
    return pairs


def run(graph: Graph, ctx: PassContext) -> Graph:
    groups: dict[Value, list[str]] = {}
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op != "matmul":
            continue
        a, b = graph.inputs_of(name)
        w = _const(graph, b)
        if w is not None and w.dim() == 2:
            groups.setdefault(a, []).append(name)
    for a, members in groups.items():
        gated = _gated_pairs(graph, members) if len(members) > 1 else {}
        for m in [m for m in members if m in gated]:
            ctx.skipped(MERGE, m, f"gated pair with {gated[m]!r}: each GEMM fuses its part of the gate")
            if m < gated[m]:
                ctx.fired(GATED, m, f"{m} and {gated[m]}")
        members = [m for m in members if m not in gated]
        widths = {graph.node(m).spec.dtype for m in members}
        if len(members) < 2 or len(widths) != 1:
            continue
        ws = [_const(graph, graph.inputs_of(m)[1]) for m in members]
        if len({w.shape[0] for w in ws}) != 1:
            continue
        biases = [_bias(graph, m) for m in members]
        with_bias = all(b is not None for b in biases)
        first = members[0]
        src = graph.node(first).source
        w_cat = graph.add_constant(f"{first}.merged_weight", torch.cat(ws, dim=1), source=src)
        merged = Value(graph.add("matmul", [a, w_cat], name=f"{first}.merged", source=src).name)
        if with_bias:
            b_cat = graph.add_constant(f"{first}.merged_bias", torch.cat([b for _, b in biases]), source=src)
            merged = Value(graph.add("add", [merged, b_cat], name=f"{first}.merged_bias_add", source=src).name)
        rank, start = len(graph.spec(merged).shape), 0
        for m, w, bias in zip(members, ws, biases):
            end = start + w.shape[1]
            piece = graph.add("slice", [merged], {"dim": rank - 1, "start": start, "end": end, "step": 1},
                              name=f"{m}.part", source=graph.node(m).source)
            old = Value(bias[0]) if with_bias else Value(m)
            graph.replace_all_uses(old, Value(piece.name))
            if with_bias:
                graph.remove_node(bias[0])
            graph.remove_node(m)
            start = end
        ctx.fired(MERGE, first, f"{len(members)} matmuls ({', '.join(members)})" + (" with biases" if with_bias else ""))
    return graph

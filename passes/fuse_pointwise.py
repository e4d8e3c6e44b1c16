"""Pointwise fusion: chains of elementwise ops (with broadcasting) become one kernel.

Requires: GEMM-epilogue and reduction fusion have taken their ops. Guarantees: pointwise ops connected
producer-to-consumer with the same output shape share one ``fused_pointwise`` node (several outputs when
values are used outside), so intermediates never touch memory. Broadcast inputs are read in place.
Ops of different shapes, or merges that would create a cycle, stay apart (reason logged).
"""

from __future__ import annotations

from trtjit.fusion import creates_cycle, fuse_group, rule
from trtjit.ir import Graph
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

CHAIN = rule("pointwise chain => pointwise kernel", "fuse_pointwise",
             "elementwise ops of one shape compute in registers and store only what is used outside")


def run(graph: Graph, ctx: PassContext) -> Graph:
    group_of: dict[str, set[str]] = {}
    for name in graph.topo_order():
        if get_op(graph.node(name).op).kind == "pointwise":
            group_of[name] = {name}
    for name in graph.topo_order():
        if name not in group_of:
            continue
        for p in graph.producers(name):
            if p not in group_of or group_of[p] is group_of[name]:
                continue
            if graph.node(p).spec.shape != graph.node(name).spec.shape:
                ctx.skipped(CHAIN, name, f"producer {p!r} has shape {list(graph.node(p).spec.shape)}")
                continue
            a, b = group_of[p], group_of[name]
            merged = a | b
            if creates_cycle(graph, merged):
                ctx.skipped(CHAIN, name, f"merging with {p!r} would create a cycle")
                continue
            for n in merged:
                group_of[n] = merged
    seen: set[int] = set()
    for name in graph.topo_order():
        if name not in group_of or id(group_of[name]) in seen:
            continue
        grp = group_of[name]
        seen.add(id(grp))
        order = [n for n in graph.topo_order() if n in grp]
        anchor = order[-1]
        ops = [graph.node(n).op for n in order]
        fuse_group(graph, order, "fused_pointwise", anchor, f"pointwise_{anchor}", [CHAIN] if len(order) > 1 else [])
        if len(order) > 1:
            ctx.fired(CHAIN, anchor, " + ".join(ops))
    return graph

"""Pointwise fusion: chains of elementwise ops (with broadcasting) become one kernel.

Requires: GEMM-epilogue and reduction fusion have taken their ops. Guarantees: pointwise ops connected
producer-to-consumer with the same output shape share one ``fused_pointwise`` node (several outputs when
values are used outside), so intermediates never touch memory. Broadcast inputs are read in place.
Ops of different shapes, or merges that would create a cycle, stay apart (reason logged).

A ``cat`` whose inputs are pointwise-computable (views, or pointwise ops used only by the cat: the
``cat((-x2, x1))`` of rotary embeddings' rotate_half) joins as a pointwise op of its output shape: the
kernel computes each output element from the input whose range covers it, evaluating that input's
pointwise ops (its "cone", kept in the body) at the shifted index. The cat then costs no kernel and no
store of its own; a cat with no pointwise neighbour stays a concat kernel.
"""

from __future__ import annotations

from trtjit.fusion import creates_cycle, fuse_group, rule
from trtjit.ir import Graph
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

CHAIN = rule("pointwise chain => pointwise kernel", "fuse_pointwise",
             "elementwise ops of one shape compute in registers and store only what is used outside")
CAT = rule("cat of pointwise-computable inputs => pointwise select", "fuse_pointwise",
           "each output element computes the input covering it: rotate_half's cat costs no kernel")


def _is_pointwise(graph: Graph, name: str) -> bool:
    return get_op(graph.node(name).op).kind == "pointwise" and len(graph.node(name).outputs) == 1


def _selectable(graph: Graph, cat: str) -> bool:
    """A cat can select per element when its inputs have its dtype (else the concat kernel converts)."""
    n = graph.node(cat)
    return n.op == "cat" and all(graph.spec(v).dtype == n.spec.dtype for v in graph.inputs_of(cat))


def cat_cone(graph: Graph, cat: str) -> set[str] | None:
    """The ops computed only for ``cat``'s inputs (its cone): pointwise ops and inner selectable cats (the
    rotated half of a partial rotary embedding), or None if the cat cannot become pointwise."""
    if not _selectable(graph, cat):
        return None
    cone: set[str] = set()
    changed = True
    while changed:  # grow backwards to a fixed point: a producer joins once all its users are inside
        changed = False
        for c in [cat, *cone]:
            for p in graph.producers(c):
                if p not in cone and (_is_pointwise(graph, p) or _selectable(graph, p)) and not graph.is_output(p) \
                        and all(u == cat or u in cone for u in graph.consumers(p)):
                    cone.add(p)
                    changed = True
    return cone


def run(graph: Graph, ctx: PassContext) -> Graph:
    group_of: dict[str, set[str]] = {}
    cones: dict[str, set[str]] = {}
    for name in graph.topo_order():
        if graph.node(name).op == "cat":
            cone = cat_cone(graph, name)
            if cone is None:
                ctx.skipped(CAT, name, "inputs of different dtypes: the concat kernel converts them")
            else:
                cones[name] = cone
    in_cone = {c for cone in cones.values() for c in cone}
    cones = {c: cone for c, cone in cones.items() if c not in in_cone}  # inner cats run inside the outer one
    for name in graph.topo_order():
        if name in cones:
            group_of[name] = {name} | cones[name]
            for c in cones[name]:
                group_of[c] = group_of[name]
        elif get_op(graph.node(name).op).kind == "pointwise" and name not in in_cone:
            group_of[name] = {name}
    for name in graph.topo_order():
        if name not in group_of or name in in_cone:
            continue
        for p in graph.producers(name):
            if p not in group_of or group_of[p] is group_of[name]:
                continue
            if name in cones or p in in_cone:  # a cat reads other producers from memory
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
        if len(order) == 1 and name in cones:
            ctx.skipped(CAT, name, "no pointwise producer or consumer: stays a concat kernel")
            continue
        anchor = order[-1]
        ops = [graph.node(n).op for n in order]
        cats = [n for n in order if n in cones]
        rules = ([CHAIN] if len(order) > 1 else []) + ([CAT] if cats else [])
        fuse_group(graph, order, "fused_pointwise", anchor, f"pointwise_{anchor}", rules)
        for c in cats:
            ctx.fired(CAT, anchor, f"{c}: {len(cones[c])} op(s) computed per input")
        if len(order) > 1:
            ctx.fired(CHAIN, anchor, " + ".join(ops))
    return graph

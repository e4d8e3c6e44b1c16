"""Activation memory planning: liveness-based buffer reuse in one arena.

Requires: views legalized (``materialize_views``), so every value has a layout. Guarantees:
``graph.meta["memory_plan"]`` maps each intermediate kernel buffer (``"node:index"``) to a byte offset in
one arena, such that buffers alive at the same time (from the kernel writing them to the last kernel
reading them or any view of them) never overlap; graph outputs get their own allocations. It also records
the peak bytes planned and the bytes one-buffer-per-tensor would need.
"""

from __future__ import annotations

from trtjit.dynamic import upper
from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext

PLAN = rule("liveness => shared arena", "memory_plan", "buffers whose lifetimes do not overlap share bytes")
ALIGN = 256


def _key(v: Value) -> str:
    return f"{v.node}:{v.index}"


def run(graph: Graph, ctx: PassContext) -> Graph:
    layouts = compute_layouts(graph)
    order = [n for n in graph.topo_order() if is_kernel_node(graph, n)]
    step = {n: i for i, n in enumerate(order)}
    outputs = {layouts[v].root for v in graph.outputs}
    life: dict[Value, list[int]] = {}
    for n in order:
        for i in range(len(graph.node(n).outputs)):
            v = Value(n, i)
            if v not in outputs:
                life[v] = [step[n], step[n]]
        for v in graph.inputs_of(n):
            root = layouts[v].root
            if root in life:
                life[root][1] = max(life[root][1], step[n])
    sizes = {v: -(-upper(graph.spec(v).nbytes) // ALIGN) * ALIGN for v in life}  # dynamic batch: sized for max
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for v in sorted(life, key=lambda v: (-sizes[v], life[v][0])):
        first, last = life[v]
        clash = sorted((o, s) for o, s, f, la in placed if not (la < first or last < f))
        off = 0
        for o, s in clash:
            if off + sizes[v] <= o:
                break
            off = max(off, o + s)
        placed.append((off, sizes[v], first, last))
        offsets[_key(v)] = off
    arena = max((o + s for o, s, _, _ in placed), default=0)
    naive = sum(sizes.values())
    graph.meta["memory_plan"] = {"arena_bytes": arena, "naive_bytes": naive, "offsets": offsets,
                                 "lifetimes": {_key(v): life[v] for v in life}}
    ctx.fired(PLAN, "<graph>", f"{len(life)} buffers: {arena} bytes planned vs {naive} one-buffer-per-tensor")
    return graph

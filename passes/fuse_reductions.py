"""Row-reduction fusion: softmax, LayerNorm, RMSNorm (and any sum/mean/max) as one kernel each.

Requires: composites decomposed. Guarantees: every reduction over dims R of a tensor of shape S is in a
``fused_reduction`` node together with its pointwise prologue (ops producing S-shaped input), every other
reduction over the same (S, R) that it feeds (the mean of squares after a mean), and its pointwise
epilogue at shape S or at the reduced shape. One program then reads a block of rows once, reduces and
writes only the group's outputs. Ops are left out (reason logged) when their shapes mix differently or
fusing them would create a cycle.
"""

from __future__ import annotations

import math

from trtjit.fusion import creates_cycle, fuse_group, rule
from trtjit.ir import Graph
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

ROW = rule("reduction + prologue + epilogue => row kernel", "fuse_reductions",
           "softmax, LayerNorm and RMSNorm read each row once and keep statistics in registers")


def row_shapes(shape: tuple[int, ...], dims: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    keep = tuple(1 if i in dims else s for i, s in enumerate(shape))
    nokeep = tuple(s for i, s in enumerate(shape) if i not in dims)
    return keep, nokeep


def _admissible(graph: Graph, name: str, group: set[str], S: tuple[int, ...], dims: list[int]) -> str | None:
    """None if ``name`` can join a row group over (S, dims), else the reason."""
    n = graph.node(name)
    kind = get_op(n.op).kind
    keep, nokeep = row_shapes(S, dims)
    if kind == "reduction":
        src = graph.spec(graph.inputs_of(name)[0]).shape
        if src != S or sorted(n.attrs["dims"]) != dims:
            return f"reduces {list(src)} over {n.attrs['dims']}, the group reduces {list(S)} over {dims}"
        ins_ok = all(v.node not in group or graph.spec(v).shape == S for v in graph.inputs_of(name))
        return None if ins_ok else "reads a row statistic as a full row"
    if kind != "pointwise":
        return f"{n.op} is not pointwise"
    out = n.spec.shape
    if out not in (S, keep, nokeep):
        return f"output shape {list(out)} is neither the row shape {list(S)} nor the reduced shape"
    for v in graph.inputs_of(name):
        if v.node in group:
            vs = graph.spec(v).shape
            if not (vs == out or (out == S and vs == keep)):
                return f"mixes {list(vs)} from the group into an op of shape {list(out)}"
    return None


def run(graph: Graph, ctx: PassContext) -> Graph:
    for seed in graph.topo_order():
        if seed not in graph or get_op(graph.node(seed).op).kind != "reduction":
            continue
        S = graph.spec(graph.inputs_of(seed)[0]).shape
        dims = sorted(graph.node(seed).attrs["dims"])
        if math.prod(S[d] for d in dims) <= 1 or not dims:
            ctx.skipped(ROW, seed, "reduces over no elements; left as its own kernel")
            continue
        group = {seed}
        changed = True
        while changed:
            changed = False
            frontier = set()
            for g in group:
                frontier.update(p for p in graph.producers(g) if p not in group)
                frontier.update(c for c in graph.consumers(g) if c not in group)
            for cand in sorted(frontier, key=lambda n: graph.nx.nodes[n]["order"]):
                cn = graph.node(cand)
                if cn.op in ("input", "constant") or get_op(cn.op).kind == "fused":
                    continue
                reason = _admissible(graph, cand, group, S, dims)
                if reason is None and creates_cycle(graph, group | {cand}):
                    reason = "fusing would create a cycle"
                if reason is not None:
                    ctx.skipped(ROW, cand, reason)
                    continue
                group.add(cand)
                changed = True
        order = [n for n in graph.topo_order() if n in group]
        ops = [graph.node(n).op for n in order]
        fuse_group(graph, order, "fused_reduction", seed, f"reduction_{graph.node(seed).source or seed}", [ROW])
        ctx.fired(ROW, seed, " + ".join(ops))
    return graph

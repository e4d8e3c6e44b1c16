"""Removal of no-op views, reshapes, transposes and copies.

Requires: a graph. Guarantees: no ``copy`` nodes; no view whose output equals its input (identity
permute, reshape/expand to the same shape, full slice, empty squeeze); chains of reshapes and chains of
permutes collapse into one view. Values keep their shapes, so consumers are untouched.
"""

from __future__ import annotations

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.passmanager import PassContext

COPY = rule("copy => removed", "remove_noops", "eval-mode dropout, contiguous() and clone() compute nothing")
IDENTITY = rule("identity view => removed", "remove_noops", "a view whose output equals its input")
CHAIN = rule("view of view => one view", "remove_noops", "reshape(reshape(x)) and permute(permute(x)) collapse")


def _is_identity(graph: Graph, name: str) -> bool:
    n = graph.node(name)
    src = graph.spec(graph.inputs_of(name)[0])
    if n.op == "copy":
        return True
    if n.op in ("reshape", "expand"):
        return tuple(n.attrs["shape"]) == src.shape
    if n.op == "permute":
        return list(n.attrs["dims"]) == list(range(len(src.shape)))
    if n.op == "squeeze":
        return not n.attrs["dims"]
    if n.op == "slice":
        a = n.attrs
        return a["start"] == 0 and a["step"] == 1 and (a["end"] is None or a["end"] >= src.shape[a["dim"]])
    return False


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op not in ("copy", "reshape", "expand", "permute", "squeeze", "slice"):
            continue
        src = graph.inputs_of(name)[0]
        if _is_identity(graph, name):
            graph.replace_all_uses(Value(name), src)
            graph.remove_node(name)
            ctx.fired(COPY if n.op == "copy" else IDENTITY, name)
            continue
        p = graph.node(src.node)
        if n.op == "reshape" and p.op == "reshape":
            graph.set_input(name, 0, graph.inputs_of(src.node)[0])
            ctx.fired(CHAIN, name, f"reshape of {src.node}")
        elif n.op == "permute" and p.op == "permute":
            inner, outer = p.attrs["dims"], n.attrs["dims"]
            n.attrs["dims"] = [inner[d] for d in outer]
            graph.set_input(name, 0, graph.inputs_of(src.node)[0])
            ctx.fired(CHAIN, name, f"permute of {src.node}")
            if _is_identity(graph, name):
                graph.replace_all_uses(Value(name), graph.inputs_of(name)[0])
                graph.remove_node(name)
                ctx.fired(IDENTITY, name)
            elif not graph.users(src.node) and not graph.is_output(src.node):
                graph.remove_node(src.node)
            continue
        if n.op == "reshape" and p.op == "reshape" and not graph.users(src.node) and not graph.is_output(src.node):
            graph.remove_node(src.node)
    return graph

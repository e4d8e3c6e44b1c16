"""Attention pattern fusion: the eager matmul -> scale -> mask -> softmax -> matmul becomes one ``sdpa``.

Requires: no-op views removed and constants folded, composites not yet decomposed (``softmax`` is still
one node). Guarantees: every ``matmul(softmax(mask(scale(matmul(q, k^T)))), v)`` whose intermediates
have no other use is replaced by an ``sdpa`` node (the flash-attention kernel), with the scale taken from
scalar multiplies/divides and the mask from an additive ``add`` or a ``where`` that fills with a large
negative constant. Patterns with other shapes (mask before scale, a softmax not over the last dim,
intermediates used elsewhere) are left alone and the reason is logged.
"""

from __future__ import annotations

import torch

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.passmanager import PassContext

ATTENTION = rule("matmul + scale + mask + softmax + matmul => attention", "fuse_attention",
                 "the score matrix never reaches memory: one flash-attention kernel")


def _scalar(graph: Graph, v: Value) -> float | None:
    n = graph.node(v.node)
    return float(n.value.reshape(-1)[0]) if n.op == "constant" and n.value.numel() == 1 else None


def _single(graph: Graph, v: Value) -> bool:
    return len(graph.users(v)) == 1 and not graph.is_output(v)


def _match(graph: Graph, name: str) -> tuple[dict, str | None]:
    """Match the pattern ending at the matmul ``name``; (captures, None) or ({}, reason)."""
    pv = graph.node(name)
    p, v = graph.inputs_of(name)
    sm = graph.node(p.node)
    if sm.op != "softmax":
        return {}, ""
    rank = len(sm.spec.shape)
    if sm.attrs["dim"] % rank != rank - 1:
        return {}, "softmax is not over the last dim"
    if not _single(graph, p):
        return {}, "the attention probabilities are used elsewhere"
    cur = graph.inputs_of(sm.name)[0]
    mask, keep_bool, scale = None, False, 1.0
    n = graph.node(cur.node)
    if n.op == "add" and _single(graph, cur):
        a, b = graph.inputs_of(n.name)
        chain, mask = (a, b) if graph.node(a.node).op in ("matmul", "mul", "div") else (b, a)
        cur = chain
    elif n.op == "where" and _single(graph, cur):
        c, x, y = graph.inputs_of(n.name)
        fx, fy = _scalar(graph, x), _scalar(graph, y)
        if fy is not None and fy <= -1e4:
            mask, keep_bool, cur = c, True, x
        elif fx is not None and fx <= -1e4:
            mask, keep_bool, cur = c, False, y
        else:
            return {}, "where() does not fill with a large negative constant"
        if graph.spec(mask).dtype != torch.bool:
            return {}, "where() condition is not boolean"
    while graph.node(cur.node).op in ("mul", "div") and _single(graph, cur):
        n = graph.node(cur.node)
        a, b = graph.inputs_of(n.name)
        sa, sb = _scalar(graph, a), _scalar(graph, b)
        if sb is not None:
            scale, cur = (scale * sb if n.op == "mul" else scale / sb), a
        elif sa is not None and n.op == "mul":
            scale, cur = scale * sa, b
        else:
            return {}, f"{n.name!r} scales by a tensor"
    qk = graph.node(cur.node)
    if qk.op != "matmul" or not _single(graph, cur):
        return {}, "scores do not come from a matmul used only here"
    q, kt = graph.inputs_of(qk.name)
    ks = graph.spec(kt).shape
    if len(graph.spec(q).shape) != len(ks) or len(ks) < 3 or graph.spec(v).shape[-2] != ks[-1]:
        return {}, "operands are not [..., L, E] x [..., E, S] x [..., S, Ev]"
    return {"q": q, "kt": kt, "v": v, "mask": mask, "keep_bool": keep_bool, "scale": scale,
            "nodes": [qk.name, sm.name, pv.name]}, None


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        if name not in graph or graph.node(name).op != "matmul":
            continue
        m, reason = _match(graph, name)
        if not m:
            if reason:
                ctx.skipped(ATTENTION, name, reason)
            continue
        src = graph.node(name).source
        rank = len(graph.spec(m["kt"]).shape)
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        k = Value(graph.add("permute", [m["kt"]], {"dims": perm}, name=f"{name}.key", source=src).name)
        ins = [m["q"], k, m["v"]]
        if m["mask"] is not None:
            mask = m["mask"]
            if graph.spec(mask).dtype == torch.bool and not m["keep_bool"]:
                mask = Value(graph.add("logical_not", [mask], name=f"{name}.keep", source=src).name)
            ins.append(mask)
        att = graph.add("sdpa", ins, {"scale": m["scale"]}, name=f"{name}.attention", source=src)
        graph.replace_all_uses(Value(name), Value(att.name))
        ctx.fired(ATTENTION, name, f"scale {m['scale']:.6g}" + (", mask" if m["mask"] is not None else ""))
    return graph

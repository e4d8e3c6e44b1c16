"""Attention pattern fusion: the eager matmul -> scale -> mask -> softmax -> matmul becomes one ``sdpa``.

Requires: no-op views removed and constants folded, composites not yet decomposed (``softmax`` is still
one node). Guarantees: every ``matmul(softmax(mask(scale(matmul(q, k^T)))), v)`` whose intermediates
have no other use is replaced by an ``sdpa`` node (the flash-attention kernel), with the scale taken from
scalar multiplies/divides and the mask from an additive ``add`` or a ``where`` that fills with a large
negative constant (a finite fill is kept as ``mask_fill``, so rows whose keys are all masked get eager
softmax's uniform weights; a -inf fill gives 0 there, as ``F.scaled_dot_product_attention`` does, where
eager softmax gives NaN). Patterns with other shapes (mask before scale, a softmax not over the last dim,
intermediates used elsewhere) are left alone and the reason is logged.

An ``sdpa`` whose mask is a constant that keeps every key (HF BERT without an attention_mask) loses the
mask input.

Grouped-query attention: when K and V of an ``sdpa`` are HF's ``repeat_kv`` (unsqueeze + expand + reshape
of [..., kv_heads, S, E] to [..., kv_heads * n_rep, S, E]), the ``sdpa`` reads the unrepeated K and V
with ``enable_gqa`` (query head h uses kv head h // n_rep), so the repeated copies are never made.
"""

from __future__ import annotations

import math

import torch

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

ATTENTION = rule("matmul + scale + mask + softmax + matmul => attention", "fuse_attention",
                 "the score matrix never reaches memory: one flash-attention kernel")


NO_MASK = rule("attention + constant all-keep mask => attention", "fuse_attention",
               "a mask that keeps every key (all True, or all 0 added) changes nothing: the kernel skips it")

GQA = rule("repeat_kv (unsqueeze + expand + reshape) + attention => grouped-query attention", "fuse_attention",
           "the kernel maps each query head to its kv head: K and V are never copied n_rep times")


def _keeps_everything(graph: Graph, v: Value) -> bool:
    """Whether ``v`` is a constant (through views) that masks nothing: all True, or all 0 when added.
    HF BERT without an attention_mask passes an expanded all-True mask."""
    n = graph.node(v.node)
    while n.op == "copy" or get_op(n.op).kind == "view":  # any view of an all-keep constant keeps all
        n = graph.node(graph.inputs_of(n.name)[0].node)
    if n.op != "constant":
        return False
    t = n.value
    return bool(t.all()) if t.dtype == torch.bool else bool((t == 0).all())


def _through_copies(graph: Graph, v: Value) -> Value:
    while graph.node(v.node).op == "copy":
        v = graph.inputs_of(v.node)[0]
    return v


def _repeated_kv(graph: Graph, v: Value) -> tuple[Value, int] | None:
    """(x, n_rep) when ``v`` is repeat_kv(x): reshape(expand(unsqueeze(x, -3)))."""
    r = graph.node(v.node)
    if r.op != "reshape":
        return None
    e = graph.node(_through_copies(graph, graph.inputs_of(r.name)[0]).node)
    if e.op != "expand":
        return None
    u = graph.node(graph.inputs_of(e.name)[0].node)
    if u.op != "unsqueeze":
        return None
    x = graph.inputs_of(u.name)[0]
    xs, es = graph.spec(x).shape, graph.node(e.name).spec.shape
    k = len(xs)
    if k < 3 or u.attrs["dim"] % (k + 1) != k - 2:
        return None
    n_rep = es[k - 2]
    if es[:k - 2] != xs[:k - 2] or es[k - 1:] != xs[k - 2:]:
        return None
    if graph.spec(v).shape != xs[:k - 3] + (xs[k - 3] * n_rep,) + xs[k - 2:]:
        return None
    return x, n_rep


def _gqa(graph: Graph, name: str) -> tuple[Value, Value, int] | str:
    """Unrepeated (k, v, n_rep) of the sdpa ``name``, or why not."""
    n = graph.node(name)
    if n.attrs["enable_gqa"]:
        return "already grouped-query"
    q, k, v = graph.inputs_of(name)[:3]
    rk, rv = _repeated_kv(graph, k), _repeated_kv(graph, v)
    if rk is None or rv is None:
        return ""
    if rk[1] != rv[1] or rk[1] < 2:
        return f"K and V are repeated {rk[1]} and {rv[1]} times"
    if len(graph.spec(q).shape) < 3 or graph.spec(q).shape[-3] != graph.spec(rk[0]).shape[-3] * rk[1]:
        return "the query heads are not the repeated kv heads"
    return rk[0], rv[0], rk[1]


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
    mask, keep_bool, scale, fill = None, False, 1.0, None
    n = graph.node(cur.node)
    if n.op == "add" and _single(graph, cur):
        a, b = graph.inputs_of(n.name)
        chain, mask = (a, b) if graph.node(a.node).op in ("matmul", "mul", "div") else (b, a)
        cur = chain
    elif n.op == "where" and _single(graph, cur):
        c, x, y = graph.inputs_of(n.name)
        fx, fy = _scalar(graph, x), _scalar(graph, y)
        if fy is not None and fy <= -1e4:
            mask, keep_bool, cur, fill = c, True, x, fy
        elif fx is not None and fx <= -1e4:
            mask, keep_bool, cur, fill = c, False, y, fx
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
            "fill": fill if fill is not None and math.isfinite(fill) else None,
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
        kt = graph.node(m["kt"].node)
        if kt.op == "permute" and kt.attrs["dims"] == perm:  # q @ k.transpose(-2, -1): read k itself
            k = graph.inputs_of(kt.name)[0]
        else:
            k = Value(graph.add("permute", [m["kt"]], {"dims": perm}, name=f"{name}.key", source=src).name)
        ins = [m["q"], k, m["v"]]
        if m["mask"] is not None:
            mask = m["mask"]
            if graph.spec(mask).dtype == torch.bool and not m["keep_bool"]:
                if graph.node(mask.node).op == "logical_not":  # masked_fill(~keep, ...): read keep itself
                    mask = graph.inputs_of(mask.node)[0]
                else:
                    mask = Value(graph.add("logical_not", [mask], name=f"{name}.keep", source=src).name)
            ins.append(mask)
        att = graph.add("sdpa", ins, {"scale": m["scale"], "mask_fill": m["fill"]}, name=f"{name}.attention",
                        source=src)
        graph.replace_all_uses(Value(name), Value(att.name))
        ctx.fired(ATTENTION, name, f"scale {m['scale']:.6g}" + (", mask" if m["mask"] is not None else ""))
    for name in graph.topo_order():
        n = graph.node(name)
        ins = graph.inputs_of(name)
        if n.op != "sdpa" or len(ins) != 4 or not _keeps_everything(graph, ins[3]):
            continue
        att = graph.add("sdpa", ins[:3], dict(n.attrs), name=f"{name}.unmasked", source=n.source)
        graph.replace_all_uses(Value(name), Value(att.name))
        graph.remove_node(name)
        graph.rename(att.name, name)
        ctx.fired(NO_MASK, name, f"{graph.spec(ins[3]).dtype} mask {list(graph.spec(ins[3]).shape)}")
    for name in graph.topo_order():
        if graph.node(name).op != "sdpa":
            continue
        got = _gqa(graph, name)
        if isinstance(got, str):
            if got:
                ctx.skipped(GQA, name, got)
            continue
        k, v, n_rep = got
        graph.set_input(name, 1, k)
        graph.set_input(name, 2, v)
        graph.node(name).attrs["enable_gqa"] = True
        ctx.fired(GQA, name, f"{n_rep} query heads per kv head")
    return graph

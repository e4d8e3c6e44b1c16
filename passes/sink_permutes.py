"""Permutes of GEMM results moved below the pointwise ops that read them, into the GEMM's epilogue.

Requires: composites decomposed, ``unflatten_matmul_rows`` done; before ``fuse_gemm_epilogue``.
Guarantees: ``u(permute(t, p), others...)`` with ``t`` a matmul result (or a pointwise chain on one),
``u`` pointwise at the permuted shape and ``p`` keeping the last dim last, or ``[0, 3, 1, 2]`` (a 4-D result
viewed as NCHW: the channels-last order conv maps are stored in, which ``patchify_conv``'s GEMM produces;
any other view transposing the last dim would cost its readers their contiguous rows), becomes
``permute(u(t, others'...), p)``, where each other operand is
read through the inverse permute (one of lower rank first viewed at full rank with leading 1s; a scalar
as it is): the same values, with the permute (a view) after ``u``. Repeats while the moved permute meets
another such op.

Why: ``nn.MultiheadAttention(batch_first=True)`` projects in sequence-first order and transposes its output
back before the residual add, and a patchify convolution done as a GEMM (``patchify_conv``) permutes its
result back to NCHW before the bias add. The view between the GEMM and the add stopped the epilogue there,
so the add ran in another kernel (a LayerNorm's prologue), which stored the sum after the GEMM had stored
its own result: one activation write and read more than needed. Reading the other operands through the
inverse view costs nothing: every template loads through strides.
"""

from __future__ import annotations

from trtjit.fusion import rule, single_use
from trtjit.ir import Graph, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

SINK = rule("pointwise(permute(gemm)) => permute(pointwise(gemm))", "sink_permutes",
            "the residual add after a transposed projection joins the GEMM's epilogue")


NCHW_OF_NHWC = [0, 3, 1, 2]  # a channels-last result viewed as NCHW: the order layout_nhwc stores conv maps in


def _from_gemm(graph: Graph, v: Value) -> bool:
    """Whether ``v`` is a matmul result, possibly through single-use pointwise ops of its shape."""
    shape = graph.spec(v).shape
    while True:
        n = graph.node(v.node)
        if n.op == "matmul":
            return True
        if get_op(n.op).kind != "pointwise" or n.spec.shape != shape or len(graph.users(Value(n.name))) != 1:
            return False
        full = [u for u in graph.inputs_of(n.name) if graph.spec(u).shape == shape]
        if not full:
            return False
        v = full[0]


def _inverse(dims: list[int]) -> list[int]:
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[d] = i
    return inv


def _sink(graph: Graph, perm: str, ctx: PassContext) -> str | None:
    """Move ``perm`` below its single pointwise reader; the new permute's name, or None."""
    pn = graph.node(perm)
    (t,) = graph.inputs_of(perm)
    if not single_use(graph, Value(perm)) or not _from_gemm(graph, t):
        return None
    u, _ = graph.users(Value(perm))[0]
    un = graph.node(u)
    shape = pn.spec.shape
    if get_op(un.op).kind != "pointwise" or un.spec.shape != shape:
        return None
    ins = graph.inputs_of(u)
    if sum(v == Value(perm) for v in ins) != 1 or any(len(graph.spec(v).shape) > len(shape) for v in ins):
        return None
    dims = [d % len(shape) for d in pn.attrs["dims"]]
    if dims[-1] != len(shape) - 1 and dims != NCHW_OF_NHWC:
        return None  # readers of the moved view would lose their contiguous rows (a transposed last dim)
    inv = _inverse(dims)
    new_ins = []
    for v in ins:
        vs = graph.spec(v).shape
        if v == Value(perm):
            new_ins.append(t)
        elif graph.spec(v).numel == 1:
            new_ins.append(v)
        else:
            if len(vs) < len(shape):  # a bias [C] against [..., C]: the same values at full rank
                v = Value(graph.add("reshape", [v], {"shape": [1] * (len(shape) - len(vs)) + list(vs)},
                                    name=f"{v.node}.full_rank", source=un.source).name)
            view = graph.add("permute", [v], {"dims": inv}, name=f"{v.node}.unpermuted", source=un.source)
            new_ins.append(Value(view.name))
    moved = graph.add(un.op, new_ins, dict(un.attrs), name=f"{u}.unpermuted", source=un.source)
    after = graph.add("permute", [Value(moved.name)], {"dims": dims}, name=graph.unique_name(perm),
                      source=pn.source)
    graph.replace_all_uses(Value(u), Value(after.name))
    graph.remove_node(u)
    graph.remove_node(perm)
    graph.rename(moved.name, u)  # the op keeps its name (traces find it); the view takes a fresh one
    ctx.fired(SINK, u, f"{un.op} runs before the permute {list(dims)}")
    return after.name


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        cur = name
        while cur is not None and cur in graph and graph.node(cur).op == "permute":
            cur = _sink(graph, cur, ctx)
    return graph

"""LayerNorm and RMSNorm folded into the GEMMs that read them: the GEMM reads the rows before normalization.

Requires: composites decomposed (a LayerNorm is mean, sub, mul, mean, add, rsqrt, mul (, mul gamma)
(, add beta)), constants folded, precision assigned and ``quantize_int8`` done (int8 GEMMs quantize the
normalized rows and are left alone); before ``fuse_gemm_epilogue``. Guarantees: a normalization over the
last dim whose result ``y`` is read only by matmuls with a constant 2-D weight (through views that keep
that dim last) is replaced, per matmul, by

    y @ W + b  =  rstd * (x @ W' - mean * s) + (b + beta @ W),   W' = gamma[:, None] * W,  s = sum_k W'[k, :]

(RMSNorm: no mean term). ``x`` is the normalization's input; ``mean`` and ``rstd`` stay the row reduction's
outputs, stored in fp32 ([..., 1], one value per row). The matmul keeps its name and reads ``x`` and ``W'``;
the rest is pointwise at its output shape, taken into its epilogue by ``fuse_gemm_epilogue`` (the outer
product ``mean * s`` from two broadcast loads). Values read by other nodes are unchanged.

Why: a LayerNorm kernel reads ``x`` and writes ``y`` (one full activation each way), then the GEMM reads
``y``. Folded, the row kernel writes two numbers per row and the GEMM reads ``x`` in place of ``y``: one
activation write and read fewer per LayerNorm (pre-LN transformers: ViT, GPT-2, Llama, twice per layer).
Numerics: ``s`` sums the rounded ``W'`` the GEMM multiplies, so ``x @ W' - mean * s`` is ``(x - mean) @ W'``
up to fp32 accumulation. A 16-bit ``x`` is stored in 16 bits either way; the same holds for fp32 without
TF32, which is why an fp32 GEMM with TF32 (rounding the unnormalized rows to 10 bits) is not folded.
Post-LN blocks (BERT: ``y`` also feeds the next residual add) are left as they are, with the reason logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trtjit.fusion import rule
from trtjit.ir import Graph, Value, dtype_name
from trtjit.passmanager import PassContext

FOLD = rule("layernorm + matmul => gemm on the raw rows with a row-statistic epilogue", "fold_layernorm_gemm",
            "the GEMM reads the LayerNorm's input; mean and 1/std per row correct its accumulator")

_VIEWS = ("permute", "reshape")


@dataclass
class _Norm:
    """A matched normalization: ``y = ((x - mean) * rstd) * gamma + beta`` over the last dim."""

    x: Value
    mean: Value | None  # None for RMSNorm
    rstd: Value
    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    chain: list[str]  # the nodes from ``norm`` to ``y``, removed once nothing reads them


def _const(graph: Graph, v: Value) -> torch.Tensor | None:
    n = graph.node(v.node)
    return n.value if n.op == "constant" else None


def _row_vector(graph: Graph, v: Value, k: int) -> torch.Tensor | None:
    """The constant ``v`` as a [k] vector when it broadcasts along the last dim only (gamma, beta)."""
    t = _const(graph, v)
    if t is None or t.dim() == 0 or t.shape[-1] != k or t.numel() != k:
        return None
    return t.reshape(k)


def _split(graph: Graph, name: str, pick) -> tuple[Value, Value] | None:
    """(the input ``pick`` accepts, the other) of the binary node ``name``, trying both orders."""
    ins = graph.inputs_of(name)
    if len(ins) != 2:
        return None
    for a, b in (ins, ins[::-1]):
        if pick(a):
            return a, b
    return None


def _last_dim_mean(graph: Graph, v: Value, rank: int) -> bool:
    n = graph.node(v.node)
    return n.op == "mean" and [d % rank for d in n.attrs["dims"]] == [rank - 1] and n.attrs["keepdim"]


def _match(graph: Graph, y: str) -> _Norm | str | None:
    """The normalization producing ``y``, a reason it cannot fold, or None when ``y`` is no normalization."""
    spec = graph.node(y).spec
    rank, k = len(spec.shape), spec.shape[-1] if spec.shape else 0
    if rank < 2:
        return None
    chain, name, gamma, beta = [], y, None, None
    if graph.node(name).op == "add":
        found = _split(graph, name, lambda v: _row_vector(graph, v, k) is not None)
        if found:
            beta = _row_vector(graph, found[0], k)
            chain.append(name)
            name = found[1].node
    if graph.node(name).op == "mul":
        found = _split(graph, name, lambda v: _row_vector(graph, v, k) is not None)
        if found:
            gamma = _row_vector(graph, found[0], k)
            chain.append(name)
            name = found[1].node
    if graph.node(name).op != "mul":
        return None

    def is_rstd(v: Value) -> bool:
        n = graph.node(v.node)
        if n.op != "rsqrt" or graph.spec(v).shape != spec.shape[:-1] + (1,):
            return False
        ve = graph.node(graph.inputs_of(v.node)[0].node)
        var = _split(graph, ve.name, lambda u: _last_dim_mean(graph, u, rank)) if ve.op == "add" else None
        return var is not None and (_const(graph, var[1]) is not None and _const(graph, var[1]).numel() == 1)

    found = _split(graph, name, is_rstd)
    if found is None:
        return None
    rstd, centered = found
    chain.append(name)
    var = next(v for v in graph.inputs_of(graph.inputs_of(rstd.node)[0].node) if _last_dim_mean(graph, v, rank))
    sq = graph.node(graph.inputs_of(var.node)[0].node)
    if sq.op != "mul" or graph.inputs_of(sq.name) != [centered, centered]:
        return None
    c = graph.node(centered.node)
    mean = None
    x = centered
    if c.op == "sub":
        a, m = graph.inputs_of(c.name)
        if _last_dim_mean(graph, m, rank) and graph.inputs_of(m.node) == [a]:
            x, mean = a, m
    if graph.spec(x).shape != spec.shape:
        return None
    for n in chain[1:]:  # norm and scale feed only the next link
        if len(graph.users(Value(n))) != 1 or graph.is_output(n):
            return f"{n!r} is also read elsewhere"
    return _Norm(x, mean, rstd, gamma, beta, list(reversed(chain)))


def _reads(graph: Graph, y: str, k: int) -> list[tuple[list[str], str]] | str:
    """(views, matmul) for every read of ``y``, or the reason one read is not a foldable matmul."""
    if graph.is_output(y):
        return f"{y!r} is a graph output"
    out = []
    for user, idx in graph.users(Value(y)):
        views, cur = [], user
        while graph.node(cur).op in _VIEWS and len(graph.users(Value(cur))) == 1 and not graph.is_output(cur):
            n = graph.node(cur)
            if n.spec.shape[-1] != k or (n.op == "permute" and n.attrs["dims"][-1] % len(n.spec.shape) !=
                                         len(n.spec.shape) - 1):
                return f"the view {cur!r} moves the normalized dim"
            views.append(cur)
            cur, idx = graph.users(Value(cur))[0]
        n = graph.node(cur)
        if n.op != "matmul" or idx != 0:
            return f"{y!r} is also read by {cur!r} ({n.op})"
        w = graph.inputs_of(cur)[1]
        if _const(graph, w) is None or len(graph.spec(w).shape) != 2:
            return f"{cur!r} multiplies by a computed (not constant 2-D) operand"
        out.append((views, cur))
    return out or f"{y!r} has no reader"


def _view(graph: Graph, src: Value, like: str, stats: bool, source: str) -> Value:
    """``src`` through the view ``like`` (a permute keeping the last dim, or a reshape); ``stats``: ``src``
    is a per-row statistic [..., 1], so a reshape keeps a last dim of 1."""
    n = graph.node(like)
    attrs = dict(n.attrs)
    if n.op == "reshape" and stats:
        attrs["shape"] = [*list(attrs["shape"])[:-1], 1]
    return Value(graph.add(n.op, [src], attrs, name=f"{src.node}.view", source=source).name)


def _fold(graph: Graph, norm: _Norm, views: list[str], mm: str) -> None:
    src = graph.node(mm).source
    dt = graph.node(mm).spec.dtype
    w_v = graph.inputs_of(mm)[1]
    w = _const(graph, w_v).float()
    k = w.shape[0]
    gamma = norm.gamma.float() if norm.gamma is not None else torch.ones(k)
    w_folded = (gamma[:, None] * w).to(dt)
    s = w_folded.float().sum(0)  # of the rounded weights the GEMM multiplies
    shift = norm.beta.float() @ w if norm.beta is not None else None
    tail = mm
    users = graph.users(Value(mm))
    if len(users) == 1 and not graph.is_output(mm) and graph.node(users[0][0]).op == "add":
        other = [v for v in graph.inputs_of(users[0][0]) if v != Value(mm)]
        b = _row_vector(graph, other[0], w.shape[1]) if len(other) == 1 else None
        if b is not None:
            tail = users[0][0]
            shift = b.float() if shift is None else shift + b.float()
    readers = graph.users(Value(tail))
    was_output = [i for i, o in enumerate(graph.outputs) if o == Value(tail)]
    a = norm.x
    for v in views:
        a = _view(graph, a, v, False, src)
    graph.set_input(mm, 0, a)
    graph.set_input(mm, 1, graph.add_constant(f"{mm}.weight_folded", w_folded, source=src))

    def stat(v: Value) -> Value:
        for view in views:
            v = _view(graph, v, view, True, src)
        return v

    acc = Value(mm) if dt == torch.float32 else Value(
        graph.add("cast", [Value(mm)], {"dtype": "float32"}, name=f"{mm}.acc", source=src).name)
    if norm.mean is not None:
        ms = graph.add("mul", [stat(_fp32(graph, norm.mean)), graph.add_constant(f"{mm}.colsum", s, source=src)],
                       name=f"{mm}.mean_colsum", source=src)
        acc = Value(graph.add("sub", [acc, Value(ms.name)], name=f"{mm}.center", source=src).name)
    out = Value(graph.add("mul", [acc, stat(_fp32(graph, norm.rstd))], name=f"{mm}.rstd", source=src).name)
    if shift is not None:
        out = Value(graph.add("add", [out, graph.add_constant(f"{mm}.bias_folded", shift, source=src)],
                              name=f"{mm}.shift", source=src).name)
    if dt != torch.float32:
        out = Value(graph.add("cast", [out], {"dtype": dtype_name(dt)}, name=f"{mm}.out", source=src).name)
    for user, i in readers:
        graph.set_input(user, i, out)
    for i in was_output:
        graph.outputs[i] = out
    if tail != mm:
        graph.remove_node(tail)
    if not graph.users(w_v.node) and not graph.is_output(w_v.node):
        graph.remove_node(w_v.node)


def _fp32(graph: Graph, v: Value) -> Value:
    """``v`` in fp32: a row statistic is stored with the row kernel's fp32 precision, one cast made per value."""
    if graph.spec(v).dtype == torch.float32:
        return v
    name = f"{v.node}.fp32"
    if name not in graph:
        graph.add("cast", [v], {"dtype": "float32"}, name=name, source=graph.node(v.node).source)
    return Value(name)


def _remove_dead(graph: Graph, names: list[str]) -> None:
    for n in reversed(names):
        if n in graph and not graph.users(n) and not graph.is_output(n):
            ins = graph.producers(n)
            graph.remove_node(n)
            _remove_dead(graph, [p for p in ins if graph.node(p).op in _VIEWS + ("constant",)])


def run(graph: Graph, ctx: PassContext) -> Graph:
    inner: set[str] = set()  # links of a matched chain: its last node is the normalization's result
    for y in reversed(graph.topo_order()):  # a chain's end before its links
        if y not in graph or y in inner:
            continue
        norm = _match(graph, y)
        if norm is None:
            continue
        if not isinstance(norm, str):
            inner.update(norm.chain)
        if isinstance(norm, str):
            ctx.skipped(FOLD, y, norm)
            continue
        spec = graph.node(y).spec
        if not spec.dtype.is_floating_point or spec.dtype.itemsize == 1:
            continue
        if spec.dtype == torch.float32 and ctx.options.tf32:
            ctx.skipped(FOLD, y, "fp32 GEMMs use TF32: the unnormalized rows would be rounded to 10 bits")
            continue
        reads = _reads(graph, y, spec.shape[-1])
        if isinstance(reads, str):
            ctx.skipped(FOLD, y, reads)
            continue
        for views, mm in reads:
            _fold(graph, norm, views, mm)
            ctx.fired(FOLD, mm, f"reads {norm.x.node!r} for {y!r}"
                      + ("" if norm.mean is not None else " (RMSNorm)"))
        _remove_dead(graph, [*norm.chain, *(v for views, _ in reads for v in views)])
    return graph

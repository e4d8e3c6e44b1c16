"""Pointwise template: one flat index space over the output shape, N-d broadcasting on every input.

Each program handles BLOCK consecutive output elements; an input's offset is rebuilt from the output
index with its own strides (zero along broadcast dims), so permuted, expanded and sliced views are read
in place. All outputs of a fused pointwise group share the output shape and are stored contiguously.

A ``cat`` in the body (``passes/fuse_pointwise``) selects, per output element, the input whose range along
the cat dim covers it; that input's own pointwise ops (its cone) are emitted under the shifted index
``i_dim - start`` with loads masked to the elements it covers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from trtjit.codegen.common import (
    BodyEmitter,
    KernelInput,
    KernelSpec,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    load_cast,
    next_pow2,
    offset_expr,
    store_cast,
    tl_dtype,
)

from trtjit.ir import Graph, Node, Value
from trtjit.layout import contiguous_strides


def generate(kin: KernelInput, name: str) -> KernelSpec:
    shape = kin.outputs[0][1].shape
    numel = math.prod(shape)
    check_index_range(kin.node.name, numel)
    block = min(1024, next_pow2(numel))
    w = Writer()
    w("pid = tl.program_id(0)")
    w("offs = pid * BLOCK + tl.arange(0, BLOCK)")
    w(f"mask = offs < {numel}")
    # iterate in the order the outputs are stored (contiguous, or permuted by ``out_perm``): stores stay dense
    strides = kin.out_layouts[0].strides if kin.out_layouts else contiguous_strides(shape)
    outer = max(range(len(shape)), key=lambda j: (strides[j], shape[j] > 1), default=0)
    declared: dict[int, str] = {}

    def var(j: int) -> str:
        if j not in declared:
            e = "offs" if strides[j] == 1 else f"offs // {strides[j]}"
            if j != outer:
                e = f"{e} % {shape[j]}" if strides[j] == 1 else f"({e}) % {shape[j]}"
            declared[j] = f"i{j}"
            w(f"i{j} = {e}")
        return declared[j]

    loaded: dict[tuple[str, str], str] = {}
    shifted: list[tuple[int, int, str]] = []  # inside a cat input: (cat dim, start, select mask)

    def load(inp: str, consumer: Node) -> str:
        key = (inp, shifted[-1][2] if shifted else "")
        if key in loaded:
            return loaded[key]
        op = kin.operands[inp]
        lay = op.layout
        if shifted:
            off, used = offset_expr(lay, shape, lambda j: shifted_var(var, shifted, j))
            masked = f", mask={shifted[-1][2]}" if used else ""  # one broadcast element: a scalar load
        elif lay.shape == shape and lay.strides == strides:
            off = "offs" + (f" + {lay.offset}" if lay.offset else "")
            masked = ", mask=mask"
        else:
            off, used = offset_expr(lay, shape, var)
            masked = ", mask=mask" if used else ""
        var_name = f"x{len(loaded)}"
        w(f"{var_name} = {load_cast(f'tl.load({op.pointer} + {off}{masked})', op.dtype)}  # {inp}")
        loaded[key] = var_name
        return var_name

    em = BodyEmitter(w, kin, load)
    in_cone = _only_for_cats(kin.body)
    for node in kin.body:
        if node.op in ("input", "constant") or node.name in in_cone:
            continue
        if node.op == "cat":
            _emit_cat(w, em, kin, node, var, shifted)
        else:
            em.emit(node)
    for (ptr, spec), v in zip(kin.outputs, kin.body.outputs):
        w(f"tl.store({ptr} + offs, {store_cast(em.value(v, kin.node), spec.dtype)}, mask=mask)")
    ops = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    src = w.source(name, kin.pointers, ["BLOCK"], f"pointwise over {list(shape)}: {ops}")
    return KernelSpec(name, "pointwise", kin.node.name, src, (cdiv(numel, block),), {"BLOCK": block},
                      kin.args, kin.covers, list(kin.node.attrs.get("rules", [])),
                      num_warps=4 if block >= 512 else 2, flops=numel * len(kin.covers), bytes=element_bytes(kin))


def _only_for_cats(body: Graph) -> set[str]:
    """Body ops whose every use is a cat input (directly or through such ops): they are computed inside the
    cat, at its inputs' shifted indices, never over the whole output."""
    outs = {v.node for v in body.outputs}
    only: set[str] = set()
    for n in reversed(body.topo_order()):
        node = body.node(n)
        users = body.consumers(n)
        if node.op not in ("input", "constant") and n not in outs and users and all(
                body.node(u).op == "cat" or u in only for u in users):
            only.add(n)
    return only


def shifted_var(var: Callable[[int], str], shifted: list[tuple[int, int, str]], j: int) -> str:
    """Index of dim ``j`` inside nested cat inputs: the output index less each enclosing input's start."""
    start = sum(s for d, s, _ in shifted if d == j)
    return f"({var(j)} - {start})" if start else var(j)


def _emit_cat(w: Writer, em: BodyEmitter, kin: KernelInput, cat: Node, var: Callable[[int], str],
              shifted: list[tuple[int, int, str]]) -> str:
    """``v = input k at (i_dim - start_k)`` where ``start_k <= i_dim < start_k + size_k``; each input's ops
    (an inner cat too) are emitted on demand under that shifted index, loads masked to what it covers."""
    body = kin.body

    def compute(name: str) -> None:
        node = body.node(name)
        if node.op in ("input", "constant") or Value(name) in em.vars:
            return
        if node.op == "cat":
            em.vars[Value(name)] = _emit_cat(w, em, kin, node, var, shifted)
            return
        for p in body.producers(name):
            compute(p)
        em.emit(node)

    d = cat.attrs["dim"] % len(cat.spec.shape)
    dt = cat.spec.dtype
    out = em.fresh("cat")
    w(f"{out} = tl.zeros((BLOCK,), dtype={'tl.float32' if dt.is_floating_point else tl_dtype(dt)})  # {cat.name}: cat")
    outer = shifted[-1][2] if shifted else "mask"
    start = 0
    for v in body.inputs_of(cat.name):
        size = body.spec(v).shape[d]
        if size == 0:
            continue
        sel = em.fresh("sel")
        idx = shifted_var(var, shifted, d)
        w(f"{sel} = {outer} & ({idx} >= {start}) & ({idx} < {start + size})")
        saved = dict(em.vars)
        shifted.append((d, start, sel))
        compute(v.node)
        val = em.value(v, cat)
        shifted.pop()
        em.vars = saved
        w(f"{out} = tl.where({sel}, {val}, {out})")
        start += size
    em.vars[Value(cat.name)] = out
    return out

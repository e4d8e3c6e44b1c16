"""Row-reduction template: softmax, LayerNorm, RMSNorm and plain sum/mean/max with fused prologue and
epilogue.

The iteration space is the reduced tensor's shape S split into kept dims (rows) and reduced dims
(columns). Each program loads a [BLOCK_R, BLOCK_C] tile holding whole rows, so every statistic of a row
stays in registers: full-shape values are [BLOCK_R, BLOCK_C], row statistics [BLOCK_R, 1]. Inputs of any
layout broadcast in place; outputs are stored at full shape or at the reduced shape.
"""

from __future__ import annotations

import math

import torch
from trtjit.codegen.common import (
    FILL_MIN_ELEMENTS,
    SMS,
    BodyEmitter,
    KernelInput,
    KernelSpec,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    int_literal,
    load_cast,
    next_pow2,
    offset_expr,
    store_cast,
)

from trtjit.dynamic import GuardError, hint, is_dynamic
from trtjit.errors import BuildError
from trtjit.ir import Node, Value
from trtjit.layout import contiguous_strides
from trtjit.ops import get_op

MAX_COLS = 65536
TILE = 4096

_COMBINE = {"sum": ("tl.sum", "0.0"), "mean": ("tl.sum", "0.0"), "amax": ("tl.max", "float('-inf')"),
            "amin": ("tl.min", "float('inf')")}


def _neutral(op: str, dtype: torch.dtype, float_neutral: str) -> str:
    """The masked-lane fill of a reduction, in the reduced value's own type: a float literal would turn
    int64 rows into fp32 (exact only below 2**24)."""
    if dtype.is_floating_point:
        return float_neutral
    if dtype == torch.bool:
        return {"amax": "0", "amin": "1"}.get(op, "0")
    info = torch.iinfo(dtype)
    return {"amax": int_literal(info.min), "amin": int_literal(info.max)}.get(op, "0")


def _space(kin: KernelInput) -> tuple[tuple[int, ...], list[int]]:
    reds = [n for n in kin.body if n.op not in ("input", "constant") and get_op(n.op).kind == "reduction"]
    if not reds:
        raise BuildError(f"node {kin.node.name!r}: reduction kernel without a reduction")
    S = kin.body.spec(kin.body.inputs_of(reds[0].name)[0]).shape
    return S, sorted(reds[0].attrs["dims"])


def generate(kin: KernelInput, name: str) -> KernelSpec:
    S, dims = _space(kin)
    kept = [d for d in range(len(S)) if d not in dims]
    keep_shape = tuple(1 if d in dims else s for d, s in enumerate(S))
    nokeep_shape = tuple(S[d] for d in kept)
    nrows = math.prod(S[d] for d in kept)
    ncols = math.prod(S[d] for d in dims)
    check_index_range(kin.node.name, math.prod(S))
    if is_dynamic(ncols):
        raise GuardError(f"node {kin.node.name!r}: a reduction over the dynamic batch dim (rows of {ncols} "
                         "elements) is not supported in a dynamic-batch engine")
    if ncols > MAX_COLS:
        raise BuildError(f"node {kin.node.name!r}: a row of {ncols} elements exceeds the single-pass "
                         f"reduction limit of {MAX_COLS}")
    block_c = next_pow2(ncols)
    block_r = max(1, min(next_pow2(nrows), TILE // block_c))
    # few rows of a sizeable tensor (a transformer at batch 1): fill the SMs first (tiny tensors: launch-bound)
    while block_r > 1 and cdiv(hint(nrows), block_r) < SMS and hint(nrows) * ncols >= FILL_MIN_ELEMENTS:
        block_r //= 2
    w = Writer()
    w("rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]")
    w("cols = tl.arange(0, BLOCK_C)[None, :]")
    w(f"rmask = rows < {nrows}")
    w(f"cmask = cols < {ncols}")
    w("mask = rmask & cmask")
    declared: dict[int, str] = {}

    def sdim(j: int) -> str:
        """Index variable of dimension j of S (rows for kept dims, cols for reduced dims)."""
        if j not in declared:
            group, lin = (kept, "rows") if j in kept else (dims, "cols")
            pos = group.index(j)
            inner = math.prod(S[d] for d in group[pos + 1:])
            e = lin if inner == 1 else f"{lin} // {inner}"
            if pos > 0:
                e = f"({e}) % {S[j]}"
            declared[j] = f"{'r' if j in kept else 'c'}{j}"
            w(f"{declared[j]} = {e}")
        return declared[j]

    def cls(shape: tuple[int, ...]) -> str:
        if shape == S:
            return "full"
        if shape == keep_shape:
            return "keep"
        if shape == nokeep_shape:
            return "nokeep"
        raise BuildError(f"node {kin.node.name!r}: value of shape {list(shape)} does not fit the row space {list(S)}")

    def var_for(c: str):
        return (lambda j: sdim(kept[j])) if c == "nokeep" else sdim

    loaded: dict[tuple[str, str], str] = {}

    def load(inp: str, consumer: Node) -> str:
        c = cls(consumer.spec.shape) if get_op(consumer.op).kind != "reduction" else "full"
        if (inp, c) in loaded:
            return loaded[(inp, c)]
        op = kin.operands[inp]
        out_shape = {"full": S, "keep": keep_shape, "nokeep": nokeep_shape}[c]
        off, used = offset_expr(op.layout, out_shape, var_for(c))
        real = {kept[j] for j in used} if c == "nokeep" else used
        uses_r, uses_c = any(d in kept for d in real), any(d in dims for d in real)
        mask = "mask" if uses_r and uses_c else "rmask" if uses_r else "cmask" if uses_c else None
        v = f"x{len(loaded)}"
        m = f", mask={mask}, other=0.0" if mask else ""
        w(f"{v} = {load_cast(f'tl.load({op.pointer} + {off}{m})', op.dtype)}  # {inp}")
        loaded[(inp, c)] = v
        return v

    em = BodyEmitter(w, kin, load)
    for node in kin.body:
        if node.op in ("input", "constant"):
            continue
        if get_op(node.op).kind == "reduction":
            x = em.value(kin.body.inputs_of(node.name)[0], node)
            fn, neutral = _COMBINE[node.op]
            neutral = _neutral(node.op, kin.body.spec(kin.body.inputs_of(node.name)[0]).dtype, neutral)
            expr = f"{fn}(tl.where(mask, {x}, {neutral}), axis=1, keep_dims=True)"
            if node.op == "mean":
                expr = f"{expr} / {float(ncols)}"
            var = em.fresh()
            w(f"{var} = {expr}  # {node.name}: {node.op}")
            em.vars[Value(node.name)] = var
        else:
            em.emit(node)
    for i, ((ptr, spec), v) in enumerate(zip(kin.outputs, kin.body.outputs)):
        full_strides = kin.out_layouts[i].strides if kin.out_layouts else contiguous_strides(S)
        val = store_cast(em.value(v, kin.node), spec.dtype)
        if cls(spec.shape) == "full":
            off = " + ".join(f"{sdim(j)} * {st}" if st != 1 else sdim(j) for j, st in enumerate(full_strides)
                             if S[j] > 1) or "0"
            w(f"tl.store({ptr} + {off}, {val}, mask=mask)")
        else:
            w(f"tl.store({ptr} + rows, {val}, mask=rmask)")
    ops = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    src = w.source(name, kin.pointers, ["BLOCK_R", "BLOCK_C"],
                   f"row reduction over dims {dims} of {list(S)} ({nrows} rows x {ncols}): {ops}")
    return KernelSpec(name, "reduction", kin.node.name, src, (cdiv(nrows, block_r),),
                      {"BLOCK_R": block_r, "BLOCK_C": block_c}, kin.args, kin.covers,
                      list(kin.node.attrs.get("rules", [])), num_warps=4 if block_r * block_c >= 1024 else 2,
                      flops=math.prod(S) * len(kin.covers), bytes=element_bytes(kin))

"""Pointwise template: one flat index space over the output shape, N-d broadcasting on every input.

Each program handles BLOCK consecutive output elements; an input's offset is rebuilt from the output
index with its own strides (zero along broadcast dims), so permuted, expanded and sliced views are read
in place. All outputs of a fused pointwise group share the output shape and are stored contiguously.
"""

from __future__ import annotations

import math

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
)

from trtjit.ir import Node
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

    loaded: dict[str, str] = {}

    def load(inp: str, consumer: Node) -> str:
        if inp in loaded:
            return loaded[inp]
        op = kin.operands[inp]
        lay = op.layout
        if lay.shape == shape and lay.strides == strides:
            off = "offs" + (f" + {lay.offset}" if lay.offset else "")
            used = {0}
        else:
            off, used = offset_expr(lay, shape, var)
        var_name = f"x{len(loaded)}"
        masked = ", mask=mask" if used else ""
        w(f"{var_name} = {load_cast(f'tl.load({op.pointer} + {off}{masked})', op.dtype)}  # {inp}")
        loaded[inp] = var_name
        return var_name

    em = BodyEmitter(w, kin, load)
    for node in kin.body:
        if node.op in ("input", "constant"):
            continue
        em.emit(node)
    for (ptr, spec), v in zip(kin.outputs, kin.body.outputs):
        w(f"tl.store({ptr} + offs, {store_cast(em.value(v, kin.node), spec.dtype)}, mask=mask)")
    ops = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    src = w.source(name, kin.pointers, ["BLOCK"], f"pointwise over {list(shape)}: {ops}")
    return KernelSpec(name, "pointwise", kin.node.name, src, (cdiv(numel, block),), {"BLOCK": block},
                      kin.args, kin.covers, list(kin.node.attrs.get("rules", [])),
                      num_warps=4 if block >= 512 else 2, flops=numel * len(kin.covers), bytes=element_bytes(kin))

"""Concatenation template: one kernel writes the whole output, each element read from the input whose
range along ``dim`` covers it (masked loads, so only one input is actually read per element)."""

from __future__ import annotations

import math

from trtjit.codegen.common import (
    KernelInput,
    KernelSpec,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    flat_index,
    load_cast,
    next_pow2,
    offset_expr,
    store_cast,
)

from trtjit.layout import contiguous_strides


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = kin.node
    (cat,) = [n for n in kin.body if n.op == "cat"]
    (ptr, spec), = kin.outputs
    shape = spec.shape
    dim = cat.attrs["dim"] % len(shape)
    numel = math.prod(shape)
    check_index_range(node.name, numel)
    block = min(1024, next_pow2(numel))
    strides = contiguous_strides(shape)
    w = Writer()
    flat_index(w, shape, strides, [f"i{j}" for j in range(len(shape))])
    w("v = tl.zeros((BLOCK,), dtype=tl.float32)" if spec.dtype.is_floating_point else
      f"v = tl.zeros((BLOCK,), dtype={_tl(spec.dtype)})")
    start = 0
    for k, v in enumerate(kin.body.inputs_of(cat.name)):
        op = kin.operands[v.node]
        size = op.layout.shape[dim] if op.layout else 1
        if size == 0:
            continue
        off, used = offset_expr(op.layout, shape,
                                lambda j, start=start: f"(i{j} - {start})" if j == dim and start else f"i{j}")
        if not used:  # a broadcast or one-element input: still one pointer per output element
            off = f"{off} + offs * 0"
        sel = f"(i{dim} >= {start}) & (i{dim} < {start + size})"
        w(f"in_{k} = mask & {sel}")
        w(f"v = tl.where(in_{k}, {load_cast(f'tl.load({op.pointer} + {off}, mask=in_{k})', op.dtype)}, v)")
        start += size
    w(f"tl.store({ptr} + offs, {store_cast('v', spec.dtype)}, mask=mask)")
    src = w.source(name, kin.pointers, ["BLOCK"], f"cat of {start} along dim {dim} into {list(shape)}")
    return KernelSpec(name, "cat", node.name, src, (cdiv(numel, block),), {"BLOCK": block}, kin.args, kin.covers,
                      [], num_warps=4, bytes=element_bytes(kin))


def _tl(dtype) -> str:
    from trtjit.codegen.common import tl_dtype
    return tl_dtype(dtype)

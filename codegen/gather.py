"""Gather template: index_select (embedding lookups) and torch.gather.

A flat index runs over the output; the index tensor is loaded at the output position (gather) or at the
output's position along ``dim`` (index_select), and the source element is read at that row.
"""

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

from trtjit.layout import Layout, contiguous_strides


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = kin.node
    ins = kin.body.inputs_of([n.name for n in kin.body if n.op == node.op][0])
    x_in, i_in = kin.operands[ins[0].node], kin.operands[ins[1].node]
    (ptr, spec), = kin.outputs
    shape = spec.shape
    dim = node.attrs["dim"] % len(shape)
    numel = math.prod(shape)
    check_index_range(node.name, numel, math.prod(x_in.layout.shape))
    block = min(1024, next_pow2(numel))
    strides = contiguous_strides(shape)
    w = Writer()
    flat_index(w, shape, strides, [f"i{j}" for j in range(len(shape))])
    if node.op == "index_select":
        idx_off, used = offset_expr(i_in.layout, (shape[dim],), lambda j: f"i{dim}")
    else:
        idx_off, used = offset_expr(i_in.layout, shape, lambda j: f"i{j}")
    if not used:  # one index for every element: still a block of pointers, as the mask is a block
        idx_off += " + offs * 0"
    w(f"idx = tl.load({i_in.pointer} + {idx_off}, mask=mask, other=0)")
    size = x_in.layout.shape[dim]
    w(f"idx = tl.where(idx < 0, idx + {size}, idx)")
    lay = x_in.layout
    src = Layout(lay.root, lay.shape, lay.strides, lay.offset)
    x_off, used = offset_expr(src, shape, lambda j: "idx" if j == dim else f"i{j}")
    if not used:
        x_off += " + offs * 0"
    w(f"v = {load_cast(f'tl.load({x_in.pointer} + {x_off}, mask=mask)', x_in.dtype)}")
    w(f"tl.store({ptr} + offs, {store_cast('v', spec.dtype)}, mask=mask)")
    src_text = w.source(name, kin.pointers, ["BLOCK"], f"{node.op} along dim {dim}: {list(lay.shape)} -> {list(shape)}")
    return KernelSpec(name, "gather", node.name, src_text, (cdiv(numel, block),), {"BLOCK": block}, kin.args,
                      kin.covers, [], num_warps=4, bytes=element_bytes(kin))

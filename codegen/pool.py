"""Pooling template: max and average pooling over NCHW windows.

One flat index over the output (n, c, oh, ow); the window is unrolled at compile time
(``tl.static_range``; a plain loop for windows of more than ``UNROLL`` elements) with bounds masks,
matching torch's padding, dilation, ceil_mode and count_include_pad semantics.
"""

from __future__ import annotations

import math

import torch
from trtjit.codegen.common import (
    KernelInput,
    KernelSpec,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    flat_index,
    int_literal,
    next_pow2,
    store_cast,
    tl_dtype,
)

from trtjit.errors import BuildError

UNROLL = 64


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = kin.node
    (inp,) = [n.name for n in kin.body if n.op == "input"]
    X = kin.operands[inp]
    (ptr, spec), = kin.outputs
    if len(spec.shape) != 4 or len(X.layout.shape) != 4:
        raise BuildError(f"node {node.name!r}: {node.op} needs NCHW (4-D) tensors, got {list(X.layout.shape)}")
    N, C, OH, OW = spec.shape
    _, _, H, W = X.layout.shape
    sxn, sxc, sxh, sxw = X.layout.strides
    a = node.attrs
    adaptive = node.op == "adaptive_avg_pool2d"
    if adaptive:  # window bounds vary per output; unroll the largest window and mask the rest
        KH, KW = -(-H // OH) + 1, -(-W // OW) + 1
        sh = sw = 1
        ph = pw = 0
    else:
        KH, KW = a["kernel"]
        sh, sw = a["stride"]
        ph, pw = a["padding"]
    dh, dw = a.get("dilation", [1, 1])
    numel = math.prod(spec.shape)
    check_index_range(node.name, numel)
    block = min(1024, next_pow2(numel))
    is_max = node.op == "max_pool2d"
    exact = not X.dtype.is_floating_point  # integers compare in their own type: fp32 would round them
    if exact and (not is_max or X.dtype == torch.bool):
        raise BuildError(f"node {node.name!r}: {node.op} of {X.dtype} tensors is not supported (integer "
                         "pooling other than max)")
    w = Writer()
    flat_index(w, spec.shape, kin.out_layouts[0].strides, ["n", "c", "oh", "ow"])
    w(f"base = {X.pointer} + {X.layout.offset} + n * {sxn} + c * {sxc}")
    init = "float('-inf')" if is_max else "0.0"
    if exact:
        init = int_literal(torch.iinfo(X.dtype).min)
    w(f"acc = tl.full((BLOCK,), {init}, {tl_dtype(X.dtype) if exact else 'tl.float32'})")
    if not is_max:
        w("cnt = tl.zeros((BLOCK,), dtype=tl.float32)")
    if adaptive:
        w(f"hs = (oh * {H}) // {OH}")
        w(f"he = ((oh + 1) * {H} + {OH - 1}) // {OH}")
        w(f"ws = (ow * {W}) // {OW}")
        w(f"we = ((ow + 1) * {W} + {OW - 1}) // {OW}")
    loop = "tl.static_range" if KH * KW <= UNROLL else "range"  # huge windows: a loop, not 10**4 copies
    w(f"for kh in {loop}({KH}):")
    w(f"    for kw in {loop}({KW}):")
    if adaptive:
        w("        ih = hs + kh")
        w("        iw = ws + kw")
        w("        ok = mask & (ih < he) & (iw < we)")
    else:
        w(f"        ih = oh * {sh} - {ph} + kh * {dh}")
        w(f"        iw = ow * {sw} - {pw} + kw * {dw}")
        w(f"        ok = mask & (ih >= 0) & (ih < {H}) & (iw >= 0) & (iw < {W})")
    other = init if exact else "float('-inf')" if is_max else "0.0"
    w(f"        x = tl.load(base + ih * {sxh} + iw * {sxw}, mask=ok, other={other}){'' if exact else '.to(tl.float32)'}")
    if is_max:
        w("        acc = tl.maximum(acc, x)")
    else:
        w("        acc += x")
        w("        cnt += ok.to(tl.float32)")
    if adaptive:
        w("acc = acc / ((he - hs) * (we - ws)).to(tl.float32)")
    elif not is_max:
        if a["divisor_override"]:
            w(f"acc = acc / {float(a['divisor_override'])}")
        elif a["count_include_pad"]:
            w(f"hs = oh * {sh} - {ph}")
            w(f"ws = ow * {sw} - {pw}")
            w(f"he = tl.minimum(hs + {KH}, {H + ph})")
            w(f"we = tl.minimum(ws + {KW}, {W + pw})")
            w("acc = acc / ((he - hs) * (we - ws)).to(tl.float32)")
        else:
            w("acc = acc / tl.maximum(cnt, 1.0)")
    w(f"tl.store({ptr} + offs, {store_cast('acc', spec.dtype)}, mask=mask)")
    what = f"to {OH}x{OW}" if adaptive else f"{KH}x{KW} stride {sh}x{sw} pad {ph}x{pw}"
    src = w.source(name, kin.pointers, ["BLOCK"], f"{node.op} {what} over {list(X.layout.shape)}")
    return KernelSpec(name, "pool", node.name, src, (cdiv(numel, block),), {"BLOCK": block}, kin.args, kin.covers,
                      [], num_warps=4, flops=numel * KH * KW, bytes=element_bytes(kin))

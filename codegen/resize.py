"""Resize template: nearest and bilinear upsampling/downsampling of NCHW tensors (torch.nn.functional.interpolate).

One flat index over the output; source coordinates follow torch's rules (``scale`` = input/output size, or
1/scale_factor when the model gave one; half-pixel centers for bilinear unless ``align_corners``).
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
    next_pow2,
    store_cast,
)

from trtjit.errors import BuildError


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = kin.node
    (inp,) = [n.name for n in kin.body if n.op == "input"]
    X = kin.operands[inp]
    (ptr, spec), = kin.outputs
    if len(spec.shape) != 4 or len(X.layout.shape) != 4:
        raise BuildError(f"node {node.name!r}: {node.op} needs NCHW (4-D) tensors, got {list(X.layout.shape)}")
    N, C, OH, OW = spec.shape
    H, W = X.layout.shape[-2:]
    sxn, sxc, sxh, sxw = X.layout.strides
    sf = node.attrs.get("scale_factor")
    if node.attrs.get("align_corners"):
        sh, sw = ((H - 1) / (OH - 1) if OH > 1 else 0.0), ((W - 1) / (OW - 1) if OW > 1 else 0.0)
    elif sf:
        sh, sw = 1.0 / sf[0], 1.0 / sf[1]
    else:
        sh, sw = H / OH, W / OW
    numel = math.prod(spec.shape)
    check_index_range(node.name, numel)
    block = min(1024, next_pow2(numel))
    w = Writer()
    flat_index(w, spec.shape, kin.out_layouts[0].strides, ["n", "c", "oh", "ow"])
    w(f"base = {X.pointer} + {X.layout.offset} + n * {sxn} + c * {sxc}")
    exact = not X.dtype.is_floating_point  # integers are copied in their own type: fp32 would round them
    if exact and node.op != "resize_nearest":
        raise BuildError(f"node {node.name!r}: {node.op} of {X.dtype} tensors is not supported (interpolating "
                         "integers)")
    if node.op == "resize_nearest":
        w(f"ih = tl.minimum((oh.to(tl.float32) * {float(sh)!r}).to(tl.int32), {H - 1})")
        w(f"iw = tl.minimum((ow.to(tl.float32) * {float(sw)!r}).to(tl.int32), {W - 1})")
        w(f"v = tl.load(base + ih * {sxh} + iw * {sxw}, mask=mask){'' if exact else '.to(tl.float32)'}")
    else:
        for ax, o, size, sc in (("h", "oh", H, sh), ("w", "ow", W, sw)):
            if node.attrs["align_corners"]:
                w(f"s{ax} = {o}.to(tl.float32) * {float(sc)!r}")
            else:
                w(f"s{ax} = tl.maximum(({o}.to(tl.float32) + 0.5) * {float(sc)!r} - 0.5, 0.0)")
            w(f"{ax}0 = tl.minimum(s{ax}.to(tl.int32), {size - 1})")
            w(f"{ax}1 = tl.minimum({ax}0 + 1, {size - 1})")
            w(f"l{ax} = s{ax} - {ax}0.to(tl.float32)")
        w(f"v00 = tl.load(base + h0 * {sxh} + w0 * {sxw}, mask=mask).to(tl.float32)")
        w(f"v01 = tl.load(base + h0 * {sxh} + w1 * {sxw}, mask=mask).to(tl.float32)")
        w(f"v10 = tl.load(base + h1 * {sxh} + w0 * {sxw}, mask=mask).to(tl.float32)")
        w(f"v11 = tl.load(base + h1 * {sxh} + w1 * {sxw}, mask=mask).to(tl.float32)")
        w("v = (v00 * (1.0 - lw) + v01 * lw) * (1.0 - lh) + (v10 * (1.0 - lw) + v11 * lw) * lh")
    w(f"tl.store({ptr} + offs, {store_cast('v', spec.dtype)}, mask=mask)")
    src = w.source(name, kin.pointers, ["BLOCK"], f"{node.op} {list(X.layout.shape)} -> {list(spec.shape)}")
    return KernelSpec(name, "resize", node.name, src, (cdiv(numel, block),), {"BLOCK": block}, kin.args, kin.covers,
                      [], num_warps=4, bytes=element_bytes(kin))

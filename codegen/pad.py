"""Pad template: constant, reflect, replicate and circular padding of any rank (F.pad / ONNX Pad).

One flat index over the output; each output coordinate maps back to a source coordinate (or to the
constant when it falls outside in ``constant`` mode).
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
    lit,
    load_cast,
    next_pow2,
    store_cast,
)

from trtjit.layout import contiguous_strides


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = kin.node
    (inp,) = [n.name for n in kin.body if n.op == "input"]
    X = kin.operands[inp]
    (ptr, spec), = kin.outputs
    shape, src = spec.shape, X.layout.shape
    before, mode = node.attrs["before"], node.attrs["mode"]
    numel = math.prod(shape)
    check_index_range(node.name, numel)
    block = min(1024, next_pow2(numel))
    w = Writer()
    flat_index(w, shape, contiguous_strides(shape), [f"o{j}" for j in range(len(shape))])
    valid = ["mask"]
    terms = [str(X.layout.offset)] if X.layout.offset else []
    for j, (n, b) in enumerate(zip(src, before)):
        w(f"s{j} = o{j} - {b}" if b else f"s{j} = o{j}")
        if not b and not node.attrs["after"][j]:
            pass  # not padded: already in range (and a dynamic batch dim needs no bound)
        elif mode == "constant":
            valid.append(f"(s{j} >= 0) & (s{j} < {n})")
        elif mode == "reflect":
            w(f"s{j} = tl.where(s{j} < 0, -s{j}, s{j})")
            w(f"s{j} = tl.where(s{j} >= {n}, {2 * (n - 1)} - s{j}, s{j})")
        elif mode == "replicate":
            w(f"s{j} = tl.minimum(tl.maximum(s{j}, 0), {n - 1})")
        else:  # circular
            w(f"s{j} = ((s{j} % {n}) + {n}) % {n}")
        if n > 1 and X.layout.strides[j]:
            terms.append(f"s{j} * {X.layout.strides[j]}")
    ok = " & ".join(valid)
    w(f"ok = {ok}")
    other = lit(float(node.attrs["value"])) if spec.dtype.is_floating_point else str(int(node.attrs["value"]))
    addr = " + ".join(terms) or "0"
    w(f"v = {load_cast(f'tl.load({X.pointer} + {addr}, mask=ok, other={other})', X.dtype)}")
    w(f"tl.store({ptr} + offs, {store_cast('v', spec.dtype)}, mask=mask)")
    src_text = w.source(name, kin.pointers, ["BLOCK"], f"{mode} pad {list(src)} -> {list(shape)}")
    return KernelSpec(name, "pad", node.name, src_text, (cdiv(numel, block),), {"BLOCK": block}, kin.args,
                      kin.covers, [], num_warps=4, bytes=element_bytes(kin))

"""Patchify convolutions (stride = kernel size, no padding: ViT's and ConvNeXt's patch embedding) as GEMMs.

Requires: composites decomposed, constants folded (BatchNorm folded into the conv first), precision
assigned and ``quantize_int8`` done: an int8 convolution stays a convolution (its calibration scales, cache
names and ``keep_fp32`` by op type were settled as a conv), and every conv still float is rewritten: all of
them in fp16/fp32 engines; under int8 those kept in float (``keep_fp32``, the few-channel rule, the precision
check); under fp8 all, as convolutions stay float there.
Guarantees: a ``conv2d`` with one group, stride equal to its kernel (larger than 1x1), no padding or
dilation, a constant weight, fewer than ``ROW_MAX_CHANNELS`` input channels (an image: deeper in a network
the NHWC implicit GEMM reads whole channel runs per tap, and the copy would be one more pass over the
activation) and a reduction K = C * KH * KW longer than one K step (``stem_input_nhwc.MIN_K``; ConvNeXt's
4x4 / 4 stem, K = 48, keeps its one-step gather) becomes

    a  = reshape(permute(reshape(x, [N, C, OH, KH, OW, KW]), [0, 2, 4, 1, 3, 5]), [N, OH, OW, C*KH*KW])
    y  = permute(matmul(a, W.reshape(OC, C*KH*KW)^T), [0, 3, 1, 2])

with the same values (rows and columns the conv would skip, when H or W is not a multiple of the kernel,
sliced off first). The matmul takes the conv's name. ``a`` is an im2col that copies each input element
once (the patches do not overlap), written contiguous by one copy kernel. When ``x`` is a cast read only
here (an fp32 image cast to 16 bits), the cast moves after the permute and is that copy. ``y`` is a view,
and ``sink_permutes`` moves it below the bias add so the bias joins the GEMM's epilogue.

Why: as an implicit-GEMM convolution the patch embedding gathers every A element through its own
(c, kh, kw) index math, or reads a filter row of KW * C elements per K step from an NHWC copy
(``stem_input_nhwc``). vit_b_16's 16x16 / 16 embedding at batch 32 took 85 us that way on the H200, against
about 7 us for the copy and 20 us for a plain GEMM of its size (benchmarks/RESULTS.md, 2026-12-04).
"""

from __future__ import annotations

from trtjit.codegen.gemm import ROW_MAX_CHANNELS
from trtjit.passes.stem_input_nhwc import MIN_K

from trtjit.fusion import rule, single_use
from trtjit.ir import Graph, Value
from trtjit.passmanager import PassContext

PATCHIFY = rule("patchify conv (stride = kernel, no padding) => im2col copy + GEMM", "patchify_conv",
                "non-overlapping patches make im2col a plain copy; the GEMM then reads contiguous rows")


def _why_not(graph: Graph, name: str) -> str | None:
    """None if the conv ``name`` is a patchify conv this pass rewrites, else why not ("" when plainly not)."""
    n = graph.node(name)
    x, w = graph.inputs_of(name)
    if len(graph.spec(x).shape) != 4:
        return ""
    kh, kw = graph.spec(w).shape[2:]
    if list(n.attrs["stride"]) != [kh, kw] or kh * kw == 1 or any(n.attrs["padding"]) \
            or list(n.attrs["dilation"]) != [1, 1]:
        return ""
    if n.attrs["groups"] != 1:
        return f"{n.attrs['groups']} groups"
    c = graph.spec(x).shape[1]
    if c >= ROW_MAX_CHANNELS:
        return (f"{c} input channels: the NHWC implicit GEMM reads whole channel runs per tap, and an im2col "
                "copy would cost an extra pass over the activation")
    if c * kh * kw <= MIN_K:
        return f"K = {c * kh * kw} is one K step of the implicit GEMM (at most {MIN_K}): a copy would cost more"
    if graph.node(w.node).op != "constant":
        return "the weight is computed, not a constant"
    if not graph.spec(x).dtype.is_floating_point:
        return f"{graph.spec(x).dtype} input"
    return None


def _rewrite(graph: Graph, name: str) -> str:
    conv = graph.node(name)
    x, w = graph.inputs_of(name)
    src = conv.source
    N, C, H, W = graph.spec(x).shape
    OC, _, KH, KW = graph.spec(w).shape
    OH, OW = H // KH, W // KW
    cropped = []
    for dim, size, keep in ((2, H, OH * KH), (3, W, OW * KW)):
        if keep != size:  # the conv never reads these trailing rows/columns
            x = Value(graph.add("slice", [x], {"dim": dim, "start": 0, "end": keep, "step": 1},
                                name=f"{name}.crop{dim}", source=src).name)
            cropped.append(size - keep)
    cast = graph.node(x.node)
    moved_cast = cast.op == "cast" and single_use(graph, x)
    if moved_cast:  # the input's cast (an fp32 image into a 16-bit engine) is the copy: one kernel, not two
        x = graph.inputs_of(cast.name)[0]
    x6 = graph.add("reshape", [x], {"shape": [N, C, OH, KH, OW, KW]}, name=f"{name}.patches", source=src)
    xp = Value(graph.add("permute", [Value(x6.name)], {"dims": [0, 2, 4, 1, 3, 5]}, name=f"{name}.patches_last",
                         source=src).name)
    if moved_cast:
        xp = Value(graph.add("cast", [xp], dict(cast.attrs), name=f"{name}.patches_{cast.attrs['dtype']}",
                             source=cast.source).name)
    a = graph.add("reshape", [xp], {"shape": [N, OH, OW, C * KH * KW]}, name=f"{name}.im2col", source=src)
    weight = graph.node(w.node).value
    wt = graph.add_constant(f"{w.node}.gemm", weight.reshape(OC, C * KH * KW).t().contiguous(), source=src)
    mm = graph.add("matmul", [Value(a.name), wt], name=graph.unique_name(f"{name}.gemm"), source=src)
    back = graph.add("permute", [Value(mm.name)], {"dims": [0, 3, 1, 2]}, name=f"{name}.nchw", source=src)
    graph.replace_all_uses(Value(name), Value(back.name))
    graph.remove_node(name)
    graph.rename(mm.name, name)  # the GEMM keeps the conv's name: traces and precision reports find it
    if not graph.users(w.node) and not graph.is_output(w.node):
        graph.remove_node(w.node)
    if moved_cast:
        graph.remove_node(cast.name)
    return f"{KH}x{KW} / {KH} over [{N}, {C}, {H}, {W}]: GEMM {N * OH * OW} x {OC} x {C * KH * KW}" + (
        f" ({' and '.join(map(str, cropped))} trailing rows/columns cropped)" if cropped else "")


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        if graph.node(name).op != "conv2d":
            continue
        reason = _why_not(graph, name)
        if reason:
            ctx.skipped(PATCHIFY, name, reason)
        elif reason is None:
            ctx.fired(PATCHIFY, name, _rewrite(graph, name))
    return graph

"""An NHWC copy of the NCHW input of a few-channel convolution (a network's RGB stem).

Requires: ``layout_nhwc`` done (layouts final) and ``conv_weight_layout`` not yet run. Guarantees: every
float ``fused_gemm`` convolution (not transposed, one group) that reads an NCHW-stored input of fewer than
``ROW_MAX_CHANNELS`` channels (a filter row of at most ``ROW_MAX_ELEMS``; codegen/gemm.py) over a reduction K = C * KH * KW longer than ``MIN_K`` (resnet50's 7x7 stem,
K = 147) reads it channels-last: the kernel producing it stores it NHWC where it can (a preprocessing
pointwise kernel), else (the graph input, a pad) the convolution reads a channels-last copy written by one
pointwise kernel (a ``copy`` storing NHWC), made once per input. Values and shapes are unchanged.

Why: ``layout_nhwc`` inserts no transposes, so a stem reads the user's NCHW image in place, and its kernel
gathers each A element through its own (c, kh, kw) div/mod and mask. Over an NHWC input with the HWIO weight
``conv_weight_layout`` then stores, one K step is one filter row, KW * C contiguous elements
(``codegen/gemm.py`` ``_row_mainloop``): resnet50's stem at batch 32, fp16, on the H200 took 190 us in the
best NCHW gather tile and 125 us + 11 us for the copy this way (benchmarks/stem_micro.py). A K of one step
(mobilenet_v2's 3x3 stem, K = 27) gathers in one step anyway and keeps its input.
"""

from __future__ import annotations

from trtjit.codegen.gemm import ROW_MAX_CHANNELS, ROW_MAX_ELEMS

from trtjit.fusion import conv_operands, fuse_group, rule
from trtjit.ir import Graph, Value
from trtjit.layout import NHWC_PERM, compute_layouts, is_kernel_node, stores_permuted_4d
from trtjit.passmanager import PassContext

STEM = rule("few-channel NCHW conv input => NHWC copy", "stem_input_nhwc",
            "a stem convolution reads each filter row of its image as one contiguous run")
MIN_K = 64  # a shorter reduction is one K step of the NCHW gather: the copy would cost more than it saves


def _stem_input(graph: Graph, name: str) -> tuple[Value, int, str] | None:
    """(outer input value, its index, reason it is skipped or "") of the convolution kernel ``name``."""
    found = conv_operands(graph, name)
    if found is None:
        return None
    conv, i, wi = found
    x = graph.inputs_of(name)[i]
    spec, wshape = graph.spec(x), graph.spec(graph.inputs_of(name)[wi]).shape
    if len(spec.shape) != 4 or conv.attrs["groups"] != 1:
        return None
    c = spec.shape[1]
    k = c * wshape[2] * wshape[3]
    if not spec.dtype.is_floating_point or spec.dtype.itemsize not in (2, 4):
        return x, i, f"{spec.dtype} input: the 8-bit kernels read OHWI weights"
    if c >= ROW_MAX_CHANNELS or c == 1 or c * wshape[3] > ROW_MAX_ELEMS:
        return None  # one channel: NCHW is NHWC already; more channels or a longer row: no row-per-step loop
    if k <= MIN_K:
        return x, i, f"K = {k} is one K step of the NCHW gather (at most {MIN_K})"
    return x, i, ""


def _store_nhwc(graph: Graph, x: Value) -> bool:
    """Whether ``x``'s own kernel (a preprocessing pointwise kernel, say) can store it NHWC instead of a copy:
    one whose template stores through its output layout (``stores_permuted_4d``; not a convolution, which
    ``layout_nhwc`` already made NHWC where it could) and whose readers are all kernels (every template reads
    its inputs through strides)."""
    if not is_kernel_node(graph, x.node) or graph.node(x.node).op == "fused_gemm" \
            or not stores_permuted_4d(graph, x.node):
        return False
    return all(is_kernel_node(graph, u) for u, _ in graph.users(x.node))


def run(graph: Graph, ctx: PassContext) -> Graph:
    layouts = compute_layouts(graph, strict=False)
    copies: dict[Value, Value] = {}
    for name in graph.topo_order():
        found = _stem_input(graph, name)
        if found is None:
            continue
        x, index, reason = found
        lay = layouts.get(x)
        if lay is None or lay.strides[1] == 1:
            continue  # already channels-last (or a view the kernel cannot read: left to materialize_views)
        if reason:
            ctx.skipped(STEM, name, reason)
            continue
        if _store_nhwc(graph, x):
            graph.node(x.node).attrs["out_perm"] = list(NHWC_PERM)
            layouts = compute_layouts(graph, strict=False)
            ctx.fired(STEM, name, f"its input's kernel {x.node} stores NHWC")
            continue
        if x not in copies:
            cp = graph.add("copy", [x], name=graph.unique_name(f"{x.node}_nhwc"), source=graph.node(name).source)
            copies[x] = Value(cp.name)
        graph.set_input(name, index, copies[x])
        ctx.fired(STEM, name, f"reads {copies[x].node} (NHWC copy of {x.node} {list(graph.spec(x).shape)})")
    for x, cp in copies.items():  # one pointwise kernel each, once its readers are wired (they are its outputs)
        fused = fuse_group(graph, [cp.node], "fused_pointwise", cp.node, f"nhwc_{x.node}", [STEM])
        fused.attrs["out_perm"] = list(NHWC_PERM)
    return graph

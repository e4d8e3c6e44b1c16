"""Channels-last layout for convolutional networks.

Requires: fusion done (kernels are final), composites decomposed. Guarantees: every kernel producing a
4-D tensor inside a convolutional region (a convolution, or a pooling/resize/pointwise/row-reduction
kernel reading one) stores it NHWC (``out_perm = [0, 2, 3, 1]``): convolutions then read their input
channels contiguously and write whole channel vectors, the tensor-core-friendly order. No transpose kernel
is inserted: every template reads its inputs through strides, so the NCHW graph input is read in place.
A kernel stays NCHW when it is a graph output or when storing it NHWC would make a following reshape need a
copy; the number of layout changes (copies ``materialize_views`` must add) is therefore zero whenever the
network allows it, and ``graph.meta["layout_changes"]`` records it.
"""

from __future__ import annotations

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

NHWC = rule("conv region => NHWC storage", "layout_nhwc",
            "channels-last stores and loads for convolutions, with no transpose kernels")
NHWC_PERM = [0, 2, 3, 1]


def _is_conv(graph: Graph, name: str) -> bool:
    n = graph.node(name)
    body = n.attrs.get("body")
    ops = {b.op for b in body} if body is not None else {n.op}
    return bool(ops & {"conv2d", "conv_transpose2d"})


def _eligible(graph: Graph, name: str) -> bool:
    """Kernels whose template can store a permuted 4-D output."""
    n = graph.node(name)
    if "out_perm" not in get_op(n.op).attrs or n.attrs.get("out_perm"):
        return False
    # several outputs (an int8 block's fp16 residual stream and its quantized copy) share one layout: the
    # templates store every output through the first one's strides
    if len(n.spec.shape) != 4 or len({tuple(o.shape) for o in n.outputs}) != 1 \
            or any(graph.is_output(Value(name, i)) for i in range(len(n.outputs))):
        return False
    if n.op == "fused_gemm":
        return _is_conv(graph, name)
    if len(n.outputs) != 1:
        return False
    if n.op == "fused_reduction":  # only full-shape outputs follow the layout (row statistics are stored dense)
        body = n.attrs["body"]
        red = next(b for b in body if get_op(b.op).kind == "reduction")
        return body.spec(body.inputs_of(red.name)[0]).shape == n.spec.shape
    return n.op in ("fused_pointwise", "fused_reduction", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                    "resize_nearest", "resize_bilinear")


def _reads_nhwc(graph: Graph, name: str, chosen: set[str], layouts: dict) -> bool:
    for v in graph.inputs_of(name):
        lay = layouts.get(v)
        if lay is not None and lay.root.node in chosen and len(graph.spec(v).shape) == 4:
            return True
    return False


def _needs_copy(graph: Graph) -> list[str]:
    lay = compute_layouts(graph, strict=False)
    return [n for n in graph.topo_order() if Value(n) in lay and lay[Value(n)] is None]


def run(graph: Graph, ctx: PassContext) -> Graph:
    if not any(_is_conv(graph, n) for n in graph.topo_order() if is_kernel_node(graph, n)):
        return graph
    chosen: set[str] = set()
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or not _eligible(graph, name):
            continue
        if _is_conv(graph, name) or _reads_nhwc(graph, name, chosen, compute_layouts(graph, strict=False)):
            graph.node(name).attrs["out_perm"] = list(NHWC_PERM)
            chosen.add(name)
    # undo NHWC where a reshape downstream could no longer be a view (it would need a layout change)
    while True:
        bad = _needs_copy(graph)
        lay = compute_layouts(graph, strict=False)
        culprits = set()
        for b in bad:
            v = graph.inputs_of(b)[0]
            while lay.get(v) is None:
                v = graph.inputs_of(v.node)[0]
            if lay[v].root.node in chosen:
                culprits.add(lay[v].root.node)
        if not culprits:
            break
        for c in culprits:
            graph.node(c).attrs["out_perm"] = None
            chosen.discard(c)
            ctx.skipped(NHWC, c, "an NHWC store would make a following reshape need a copy")
    for c in sorted(chosen):
        ctx.fired(NHWC, c, graph.node(c).op)
    graph.meta["layout_changes"] = len(_needs_copy(graph))  # copies materialize_views will have to add
    return graph

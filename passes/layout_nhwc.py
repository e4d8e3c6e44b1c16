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
from trtjit.layout import NHWC_PERM, compute_layouts, is_conv_kernel, is_kernel_node, stores_permuted_4d
from trtjit.passmanager import PassContext

NHWC = rule("conv region => NHWC storage", "layout_nhwc",
            "channels-last stores and loads for convolutions, with no transpose kernels")


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
    if not any(is_conv_kernel(graph, n) for n in graph.topo_order() if is_kernel_node(graph, n)):
        return graph
    chosen: set[str] = set()
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or not stores_permuted_4d(graph, name):
            continue
        if is_conv_kernel(graph, name) or _reads_nhwc(graph, name, chosen, compute_layouts(graph, strict=False)):
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

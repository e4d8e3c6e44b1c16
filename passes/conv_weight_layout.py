"""Conv weights stored in the order the NHWC convolution kernels read them.

Requires: ``layout_nhwc`` done (a convolution's input layout is final), weights constant. Guarantees: every
``fused_gemm`` convolution (not transposed) whose input is stored channels-last and whose weight is a
constant ``[OC, C/g, KH, KW]`` reads it through ``permute(W_hwio, [3, 2, 0, 1])`` of a constant
``W_hwio = W.permute(2, 3, 1, 0)`` stored contiguously: the logical weight (and every value and shape) is
unchanged, only its storage. The kernel's reduction index runs (kh, kw, c) with c fastest, so the B tile
``[BLOCK_K, BLOCK_N]`` becomes one contiguous row block per k (output channels fastest) instead of a
gather striding by C*KH*KW along N and by KH*KW along K; a depthwise weight ``[C, 1, KH, KW]`` becomes
``[KH, KW, 1, C]``, one contiguous channel vector per tap. An int8/fp8 weight (not depthwise) is stored
OHWI instead (``W.permute(0, 2, 3, 1)``): Hopper's 8-bit MMAs take B K-major, and with c fastest the
(kh, kw, c) reduction index of one output channel is one contiguous run. A constant read by other kernels
too keeps its original copy for them.
"""

from __future__ import annotations

from trtjit.fusion import conv_operands, rule
from trtjit.ir import Graph, Value
from trtjit.layout import compute_layouts
from trtjit.passmanager import PassContext

HWIO = rule("NHWC conv weight => HWIO storage", "conv_weight_layout",
            "the weight tile of a channels-last convolution loads contiguously (output channels fastest)")
OHWI = rule("NHWC int8/fp8 conv weight => OHWI storage", "conv_weight_layout",
            "8-bit tensor-core MMAs (wgmma) read both operands K-major: each output channel's (kh, kw, c) "
            "run is contiguous")
TO_OIHW = [3, 2, 0, 1]  # HWIO storage viewed as the logical OIHW weight
OHWI_TO_OIHW = [0, 3, 1, 2]  # OHWI storage viewed as the logical OIHW weight


def _conv_operands(graph: Graph, name: str) -> tuple[Value, int, Value] | None:
    """(outer input value, weight's input index, outer weight value) of the convolution kernel ``name``."""
    found = conv_operands(graph, name)
    if found is None:
        return None
    _, xi, wi = found
    outer = graph.inputs_of(name)
    return outer[xi], wi, outer[wi]


def run(graph: Graph, ctx: PassContext) -> Graph:
    layouts = compute_layouts(graph, strict=False)
    relaid: dict[str, Value] = {}
    for name in graph.topo_order():
        found = _conv_operands(graph, name)
        if found is None:
            continue
        x, index, wv = found
        src = graph.node(wv.node)
        if src.op != "constant" or src.value.dim() != 4:
            continue
        lay = layouts.get(x)
        if lay is None or lay.strides[1] != 1 or graph.spec(x).shape[1] == 1:
            continue  # NCHW input: the kernel's K order is (c, kh, kw), which OIHW already serves
        k_major = src.value.element_size() == 1 and src.value.shape[1] > 1  # int8/fp8, not depthwise
        fired, order, view, tag = (OHWI, (0, 2, 3, 1), OHWI_TO_OIHW, "ohwi") if k_major else \
            (HWIO, (2, 3, 1, 0), TO_OIHW, "hwio")
        if wv.node not in relaid:
            c = graph.add_constant(f"{wv.node}.{tag}", src.value.permute(*order).contiguous(), source=src.source)
            relaid[wv.node] = Value(graph.add("permute", [c], {"dims": view}, name=f"{wv.node}.oihw",
                                              source=src.source).name)
        graph.set_input(name, index, relaid[wv.node])
        ctx.fired(fired, name, f"weight {wv.node} {tuple(src.value.shape)} stored as {tag.upper()}")
        if not graph.users(wv.node) and not graph.is_output(wv.node):
            graph.remove_node(wv.node)
    return graph

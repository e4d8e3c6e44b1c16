"""View legalization before lowering.

Requires: composites decomposed. Guarantees: every value has a layout (``trtjit.layout``): a reshape that
no strides can express reads a contiguous ``copy`` of its input; every graph output is a contiguous
buffer written by a kernel (outputs that alias an input, a constant, another output or a strided view
get a ``copy``; a contiguous view of a whole kernel output is that buffer), so the engine hands back
tensors the caller owns.
"""

from __future__ import annotations

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext

RESHAPE_COPY = rule("non-viewable reshape => copy + reshape", "materialize_views",
                    "torch would copy here too; the copy is a pointwise kernel")
OUTPUT_COPY = rule("aliased output => copy", "materialize_views", "outputs must be fresh contiguous buffers")


PERMUTED_STORE = rule("kernel + permute + reshape => permuted store", "materialize_views",
                      "a GEMM or attention kernel writes its output in the permuted order, so no copy is needed")


def _store_permuted(graph: Graph, v: Value) -> bool:
    """When ``v`` is permute(X) and X comes from a GEMM or attention kernel used only here, have that kernel
    store X permuted (``out_perm``) so ``v`` becomes contiguous. Returns whether it did."""
    p = graph.node(v.node)
    if p.op != "permute":
        return False
    x = graph.inputs_of(p.name)[0]
    prod = graph.node(x.node)
    body = prod.attrs.get("body")
    templated = prod.op == "sdpa" or (prod.op == "fused_gemm" and any(n.op == "matmul" for n in body))
    if not templated or len(prod.outputs) != 1 or graph.is_output(x) or len(graph.users(x)) != 1 \
            or prod.attrs.get("out_perm"):
        return False
    prod.attrs["out_perm"] = list(p.attrs["dims"])
    return True


def run(graph: Graph, ctx: PassContext) -> Graph:
    while True:
        layouts = compute_layouts(graph, strict=False)
        bad = next((n for n in graph.topo_order() if Value(n) in layouts and layouts[Value(n)] is None
                    and layouts[graph.inputs_of(n)[0]] is not None), None)
        if bad is None:
            break
        src = graph.inputs_of(bad)[0]
        if _store_permuted(graph, src):
            ctx.fired(PERMUTED_STORE, graph.inputs_of(src.node)[0].node, f"so that {bad} is a view")
            continue
        cp = graph.add("copy", [src], name=f"{bad}.copy", source=graph.node(bad).source)
        graph.set_input(bad, 0, Value(cp.name))
        ctx.fired(RESHAPE_COPY, bad)
    layouts = compute_layouts(graph)
    for v in graph.outputs:  # an output transposed from a GEMM's rows: the GEMM stores it in that order
        if not layouts[v].is_contiguous and _store_permuted(graph, v):
            ctx.fired(PERMUTED_STORE, graph.inputs_of(v.node)[0].node, f"so that the output {v.node} is contiguous")
            layouts = compute_layouts(graph)
    seen: set[Value] = set()
    new_outputs = []
    for v in graph.outputs:
        lay = layouts[v]
        # a contiguous view of a whole kernel output (a GEMM's rows viewed as [B, tokens, C]) is that buffer
        whole = lay.root == v or graph.spec(lay.root).numel == graph.spec(v).numel
        owned = is_kernel_node(graph, lay.root.node) and lay.is_contiguous and whole
        if not owned or v in seen or lay.root in seen:
            cp = graph.add("copy", [v], name=f"{v.node}.out", source=graph.node(v.node).source)
            ctx.fired(OUTPUT_COPY, v.node)
            v = Value(cp.name)
            seen.add(v)
        else:
            seen.update((v, lay.root))  # one output per buffer: another view of this root gets a copy
        new_outputs.append(v)
    graph.outputs = new_outputs
    return graph

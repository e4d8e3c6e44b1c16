"""GEMM tactic selection: the stream-K Gluon template (``codegen.gluon_gemm``) for the GEMMs it suits.

Requires: the final graph (views materialized), so every GEMM kernel can be generated. Guarantees: the graph
is unchanged except ``graph.meta["tiles"]``, where each GEMM kernel node that gets the stream-K template maps
to its tile record (``kind: "stream_k"``); the autotune pass leaves those alone. Which GEMMs get it follows
``BuildOptions.gemm_tactic``:

- "triton": none.
- "stream_k": every GEMM the template can express (``gluon_gemm.ineligible``), however small.
- "auto" (default): those that also fill at least ``gluon_gemm.MIN_WAVES`` full waves of tiles, when the
  build runs on an sm_90 GPU. The choice is recorded in the IR, so an engine file reloads with it anywhere.

Gluon kernels run on sm_90 only, neither under Triton's interpreter nor on other GPUs, so any tactic but
"triton" applies only to builds whose ``targets`` are sm_90 alone (BuildOptions refuses "stream_k" with
others; "auto" then keeps the Triton template).
"""

from __future__ import annotations

from trtjit.codegen import kernel_input, template_of
from trtjit.codegen.gluon_gemm import MIN_WAVES, ineligible, tile_of

from trtjit.backend import interpreting
from trtjit.fusion import rule
from trtjit.ir import Graph
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext

STREAM_K = rule("matmul + epilogue => stream-K gluon gemm", "gemm_tactic",
                "split a large GEMM's k steps evenly over one warp-specialized program per SM (sm_90)")


def _on_hopper() -> bool:
    import torch

    return not interpreting() and torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def run(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    if opts.gemm_tactic == "triton":
        return graph
    if opts.gemm_tactic == "auto" and (not _on_hopper() or any(t != "sm_90" for t in opts.targets)):
        return graph
    min_waves = MIN_WAVES if opts.gemm_tactic == "auto" else 0
    layouts = compute_layouts(graph)
    tiles = dict(graph.meta.get("tiles", {}))
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or graph.node(name).op == "plugin" or template_of(graph, name) != "gemm":
            continue
        kin = kernel_input(graph, name, layouts, opts.tf32)
        why = ineligible(kin, min_waves)
        if why:
            ctx.skipped(STREAM_K, name, why)
            continue
        tiles[name] = tile_of(kin)
        ctx.fired(STREAM_K, name, f"{tiles[name]}")
    if tiles:
        graph.meta["tiles"] = tiles
    return graph

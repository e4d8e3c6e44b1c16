"""GEMM tactic selection: the ping-pong Gluon template (``codegen.gluon_gemm``) for the GEMMs it suits.

Requires: the final graph (views materialized), so every GEMM kernel can be generated. Guarantees: the graph
is unchanged except ``graph.meta["tiles"]``, where each GEMM kernel node that gets the ping-pong template maps
to its tile record (``kind: "pingpong"``); the autotune pass leaves those alone. Which GEMMs get it follows
``BuildOptions.gemm_tactic``:

- "triton": none.
- "pingpong": every GEMM the template can express (``gluon_gemm.ineligible``), however small.
- "auto" (the default; in engines on the H100 it took vit_b_16 bs32 from 3.039 to 2.974 ms,
  ``benchmarks/tactic_ab.py``): those whose epilogue has a GELU (``gluon_gemm.HEAVY_EPILOGUE_OPS``, where the H100
  measured it faster) and that fill at least ``gluon_gemm.MIN_WAVES`` full waves of tiles, when the build
  runs on an sm_90 GPU and cross-compiles for sm_90 alone (``targets=["sm_90"]``). The choice is recorded
  in the IR, so an engine file reloads with it anywhere. If such a kernel then fails to compile, the
  builder puts those GEMMs back on the Triton template (``builder._cross_compile``).

Gluon kernels run on sm_90 only, neither under Triton's interpreter nor on other GPUs, so any tactic but
"triton" applies only to builds whose ``targets`` are sm_90 alone (BuildOptions refuses "pingpong" with
others; "auto" then keeps the Triton template).
"""

from __future__ import annotations

from trtjit.codegen import kernel_input, template_of
from trtjit.codegen.gluon_gemm import MIN_WAVES, heavy_epilogue, ineligible, tile_of

from trtjit.fusion import rule
from trtjit.ir import Graph
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext

PINGPONG = rule("matmul + heavy epilogue => ping-pong gluon gemm", "gemm_tactic",
                "two consumer warpgroups on alternate tiles, so one's epilogue hides behind the other's MMAs "
                "(sm_90)")


def _on_hopper() -> bool:
    from trtjit.cuda_launcher import current_arch

    return current_arch() == "sm_90"


def run(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    if opts.gemm_tactic == "triton":
        return graph
    if opts.gemm_tactic == "auto" and (not _on_hopper() or opts.targets != ("sm_90",)):
        return graph  # "auto" takes the path that ran on the H100: stored sm_90 cubins, not a JIT at run time
    auto = opts.gemm_tactic == "auto"
    layouts = compute_layouts(graph)
    tiles = dict(graph.meta.get("tiles", {}))
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or graph.node(name).op == "plugin" or template_of(graph, name) != "gemm":
            continue
        kin = kernel_input(graph, name, layouts, opts.tf32)
        why = "the epilogue has no GELU to hide" if auto and not heavy_epilogue(kin) else \
            ineligible(kin, MIN_WAVES if auto else 0)
        if why:
            ctx.skipped(PINGPONG, name, why)
            continue
        tiles[name] = tile_of(kin)
        ctx.fired(PINGPONG, name, f"{tiles[name]}")
    if tiles:
        graph.meta["tiles"] = tiles
    return graph

"""Flattened-row matmuls back to batched ones: ``reshape(matmul(reshape(x), W) (+ b))`` => ``matmul(x, W) (+ b)``.

Requires: composites decomposed (a linear is matmul + add), before ``sink_permutes`` and
``fuse_gemm_epilogue``. Guarantees: ``reshape(matmul(a, W) (+ b), [*lead, N])`` with a 2-D ``a`` of shape
[M, K], ``M = prod(lead)``, and a 2-D ``W`` becomes ``matmul(reshape(a, [*lead, K]), W) (+ b)``: the same
GEMM (the batch folds into M) with no view between it and what follows. The matmul and bias nodes keep their
names (traces find them) and take the batched shapes; the view back is removed.

Why: GPT-2's Conv1D is ``addmm`` on flattened rows, viewed back. The view between the GEMM and its
activation or residual add stopped the epilogue there.
"""

from __future__ import annotations

import math

from trtjit.fusion import rule, single_use
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.passmanager import PassContext

FLAT = rule("reshape + matmul (+ bias) + reshape => batched matmul", "unflatten_matmul_rows",
            "addmm on flattened rows (GPT-2's Conv1D) reads the rows in place, so the epilogue reaches the "
            "activation and residual add after the view back")


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        if name not in graph or graph.node(name).op != "matmul":
            continue
        a, w = graph.inputs_of(name)
        if len(graph.spec(w).shape) != 2 or len(graph.spec(a).shape) != 2:
            continue
        chain, tail = [name], name
        users = [u for u, _ in graph.users(Value(name))]
        if single_use(graph, Value(name)) and graph.node(users[0]).op == "add":
            other = [v for v in graph.inputs_of(users[0]) if v != Value(name)]
            if len(other) == 1 and len(graph.spec(other[0]).shape) <= 1:
                tail = users[0]
                chain.append(tail)
        if not single_use(graph, Value(tail)):
            continue
        back = graph.node(graph.users(Value(tail))[0][0])
        (m, k), n_out = graph.spec(a).shape, graph.node(name).spec.shape[1]
        lead = back.spec.shape[:-1]
        if back.op != "reshape" or len(lead) < 2 or back.spec.shape[-1] != n_out or math.prod(lead) != m:
            continue
        rows = graph.add("reshape", [a], {"shape": [*lead, k]}, name=f"{name}.rows", source=graph.node(name).source)
        graph.set_input(name, 0, Value(rows.name))
        for n in chain:  # same nodes and names, batched shapes: traces (trtjit.explore) still find them
            graph.node(n).outputs = [TensorSpec(tuple(lead) + (n_out,), graph.node(n).spec.dtype)]
        graph.replace_all_uses(Value(back.name), Value(tail))
        graph.remove_node(back.name)
        ctx.fired(FLAT, name, f"{list(lead)} rows, the view {back.name!r} dropped")
    return graph

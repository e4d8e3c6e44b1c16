"""Decomposition of composite ops (softmax, LayerNorm, RMSNorm, BatchNorm, linear, attention, var).

Requires: a graph. Guarantees: no node of kind ``composite`` remains; each is replaced by the table ops
its ``decompose`` builds (named ``<node>.<part>`` so they trace back), which the fusion passes then
regroup into kernels.
"""

from __future__ import annotations

from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

DECOMPOSE = rule("composite => table ops", "decompose", "rewrite with the op's decompose function")


def run(graph: Graph, ctx: PassContext) -> Graph:
    changed = True
    while changed:
        changed = False
        for name in graph.topo_order():
            n = graph.node(name)
            opdef = get_op(n.op)
            if opdef.kind != "composite":
                continue
            outs = opdef.decompose(graph, n, graph.inputs_of(name))
            for i, v in enumerate(outs):
                graph.replace_all_uses(Value(name, i), v)
            graph.remove_node(name)
            ctx.fired(DECOMPOSE, name, n.op)
            changed = True
    return graph

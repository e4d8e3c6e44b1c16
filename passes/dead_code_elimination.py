"""Dead-code elimination.

Requires: a graph. Guarantees: every remaining node other than graph inputs feeds a graph output.
"""

from __future__ import annotations

import networkx as nx

from trtjit.ir import Graph
from trtjit.passmanager import PassContext


def run(graph: Graph, ctx: PassContext) -> Graph:
    live = {v.node for v in graph.outputs}
    for v in list(live):
        live |= nx.ancestors(graph.nx, v)
    for name in reversed(graph.topo_order()):
        if name not in live and name not in graph.inputs:
            graph.remove_node(name)
            ctx.fired("unused => removed", name)
    return graph

"""Named fusion and rewrite rules, and the one helper every fusion pass uses to build a fused node.

Rules are data: each has a name like ``"conv + bn => conv"`` and a short reason. Passes record, per
node, which rule fired or why it did not (``PassContext.fired`` / ``PassContext.skipped``), so a notebook
or `trtjit inspect` can list them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from trtjit.ir import Graph, Node, Value


@dataclass(frozen=True)
class Rule:
    name: str
    pass_name: str
    doc: str


RULES: dict[str, Rule] = {}


def rule(name: str, pass_name: str, doc: str) -> str:
    RULES[name] = Rule(name, pass_name, doc)
    return name


def single_use(graph: Graph, v: Value) -> bool:
    """Whether ``v`` has exactly one reader and is no graph output: a rewrite may then absorb or move it."""
    return len(graph.users(v)) == 1 and not graph.is_output(v)


def creates_cycle(graph: Graph, group: set[str]) -> bool:
    """True when fusing ``group`` into one node would create a cycle: some node outside the group is both
    reachable from the group and feeds it."""
    seen: set[str] = set()
    todo = deque(s for g in group for s in graph.nx.successors(g) if s not in group)
    while todo:
        n = todo.popleft()
        if n in seen:
            continue
        seen.add(n)
        for s in graph.nx.successors(n):
            if s in group:
                return True
            if s not in seen:
                todo.append(s)
    return False


def fuse_group(graph: Graph, names: Iterable[str], op: str, anchor: str, kernel: str, rules: list[str]) -> Node:
    """Replace the nodes ``names`` by one ``op`` node whose ``body`` attribute is their subgraph.

    The fused node takes the anchor's name, reads the group's external values in first-use order and
    exposes every value used outside the group as an output.
    """
    names = list(names)
    body = graph.subgraph(names)
    ext = [Value(n, i) for n, i in body.meta.pop("external_inputs")]
    outs = list(body.outputs)
    tmp = graph.unique_name(f"{anchor}__fused")
    fused = graph.add(op, ext, {"body": body, "rules": sorted(set(rules)), "kernel_name": kernel}, name=tmp,
                      source=graph.node(anchor).source)
    for i, v in enumerate(outs):
        graph.replace_all_uses(v, Value(fused.name, i))
    group = set(names)
    for n in reversed(list(nx.topological_sort(graph.nx.subgraph(group)))):  # users before producers
        graph.remove_node(n)
    graph.rename(fused.name, anchor)
    return graph.node(anchor)


def conv_operands(graph: Graph, name: str) -> tuple[Node, int, int] | None:
    """(conv2d node of the body, index of its input among the kernel's inputs, index of its weight) of the
    fused convolution kernel ``name``; None for other kernels and for a conv whose operands are computed
    inside the kernel."""
    n = graph.node(name)
    if n.op != "fused_gemm":
        return None
    body = n.attrs["body"]
    conv = next((b for b in body if b.op == "conv2d"), None)
    if conv is None:
        return None
    x, w = body.inputs_of(conv.name)
    if body.node(w.node).op != "input" or body.node(x.node).op != "input":
        return None
    return conv, body.inputs.index(x.node), body.inputs.index(w.node)

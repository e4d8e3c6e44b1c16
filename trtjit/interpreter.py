"""The reference interpreter: runs any IR graph with the op table's torch implementations.

It is the numerics oracle for tests, the engine behind constant folding, and the source of calibration
statistics: ``capture=True`` returns every intermediate tensor keyed by ``Value``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trtjit.dynamic import at, batch_of, is_dynamic
from trtjit.errors import GraphError, InputError
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.ops import get_op


def run_graph(graph: Graph, inputs: Sequence[torch.Tensor], capture: bool = False,
              ) -> list[torch.Tensor] | tuple[list[torch.Tensor], dict[Value, torch.Tensor]]:
    """Evaluate ``graph`` on ``inputs`` (in ``graph.inputs`` order) and return its outputs."""
    if len(inputs) != len(graph.inputs):
        raise InputError(f"graph takes {len(graph.inputs)} input(s) {graph.inputs}, got {len(inputs)}")
    env: dict[Value, torch.Tensor] = {}
    nb = None  # a dynamic-batch graph (trtjit.dynamic) runs at the inputs' batch
    for i, (name, t) in enumerate(zip(graph.inputs, inputs)):
        want = graph.node(name).spec
        if is_dynamic(want.shape):
            if t.dtype != want.dtype:
                raise InputError(f"input {name!r}: expected {want}, got {TensorSpec.of(t)}")
            nb = batch_of(name, i, want.shape, tuple(t.shape)) or nb
        elif TensorSpec.of(t) != want:
            raise InputError(f"input {name!r}: expected {want}, got {TensorSpec.of(t)}")
        env[Value(name)] = t
    for node in graph:
        if node.op == "input":
            continue
        if node.op == "constant":
            env[Value(node.name)] = node.value
            continue
        args = [env[v] for v in graph.inputs_of(node.name)]
        try:
            outs = get_op(node.op).run(args, node.attrs if nb is None else at(node.attrs, nb))
        except Exception as e:
            raise GraphError(f"reference interpreter failed at node {node.name!r} ({node.op}): {e}") from e
        for i, t in enumerate(outs):
            env[Value(node.name, i)] = t
    outs = [env[v] for v in graph.outputs]
    return (outs, env) if capture else outs

"""Constant folding.

Requires: a graph. Guarantees: every op node whose inputs are all constants is replaced by a constant
holding its reference result (so weight transposes, BatchNorm scale/shift and scalar arithmetic cost
nothing at run time), except broadcasts that would materialize far more data than they read and values
whose shape follows a dynamic batch.
"""

from __future__ import annotations

import torch

from trtjit.dynamic import is_dynamic
from trtjit.fusion import rule
from trtjit.ir import Graph, Node, TensorSpec, Value
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

FOLD = rule("constant inputs => constant", "constant_folding", "evaluate with the reference implementation")
MAX_GROWTH = 4


def _owned_contiguous(out: torch.Tensor, args: list[torch.Tensor]) -> torch.Tensor:
    """``out`` as a contiguous tensor of its own storage, copied once at most: a view of an input (a reshape)
    or a strided result (a transpose) is cloned contiguous; a fresh contiguous result is kept as it is."""
    own = out.is_contiguous() and out.untyped_storage().nbytes() == out.nbytes \
        and all(out.untyped_storage().data_ptr() != a.untyped_storage().data_ptr() for a in args)
    return out if own else out.clone(memory_format=torch.contiguous_format)


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        n = graph.node(name)
        if n.op in ("input", "constant") or get_op(n.op).kind == "fused":
            continue
        ins = graph.inputs_of(name)
        if not ins or any(graph.node(v.node).op != "constant" for v in ins) or len(n.outputs) != 1:
            continue
        if is_dynamic(n.spec.shape):  # e.g. a constant expanded to the batch: its size is known at run time only
            ctx.skipped(FOLD, name, "its shape follows the dynamic batch")
            continue
        read = sum(graph.spec(v).numel for v in ins)
        if n.spec.numel > max(64, MAX_GROWTH * read):
            ctx.skipped(FOLD, name, f"output has {n.spec.numel} elements from {read} read; left as a view")
            continue
        args = [graph.node(v.node).value for v in ins]
        value = _owned_contiguous(get_op(n.op).run(args, n.attrs)[0], args)
        assert TensorSpec.of(value) == n.spec, name
        tmp = graph.unique_name(f"{name}__const")
        graph.add_node(Node(tmp, "constant", {}, [n.spec], value, n.source))
        graph.replace_all_uses(Value(name), Value(tmp))
        graph.remove_node(name)
        graph.rename(tmp, name)
        ctx.fired(FOLD, name, n.op)
        for src in dict.fromkeys(v.node for v in ins):
            if not graph.users(src) and not graph.is_output(src):
                graph.remove_node(src)
    return graph

"""Rewrite of reshape -> permute (-> reshape) chains that strides cannot express into split -> permute.

Requires: composites decomposed, before ``materialize_views``. Guarantees: values keep their shapes and
contents; a chain whose first or last reshape no strides can express (its layout is None, so
``materialize_views`` would copy) becomes reshape(x, F) -> permute -> [reshape], where F refines the
shapes on both sides of the first reshape. A pure split of dims is expressible on any strided input,
so the copy disappears; the rewrite happens only where the whole new chain is a strided view.

The case that needs it: nn.MultiheadAttention splits its packed q/k/v projection as
``q.view(L, B * H, hd).transpose(0, 1).view(B, H, L, hd)``; q is a strided slice of the projection, so the
middle view merges B with H across unrelated strides. Rewritten it is ``q.view(L, B, H, hd).permute(1, 2,
0, 3)``: a strided view the attention kernel reads directly (vit_b_16 at batch 32 had three q/k/v copy
kernels per layer, 5% of its time).
"""

from __future__ import annotations

import math

import torch

from trtjit.dynamic import is_dynamic
from trtjit.fusion import rule
from trtjit.ir import Graph, Value
from trtjit.layout import Layout, _view_of, compute_layouts, update_layouts
from trtjit.ops import get_op
from trtjit.passmanager import PassContext

SPLIT_PERMUTE = rule("reshape + permute + reshape => split + permute", "fold_view_chains",
                     "the same element order as strided views of the input, with no copy")


def _refine(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[list[int], list[list[int]]] | None:
    """The common refinement F of two shapes of one numel (no size-1 dims): F's sizes and, for each dim of
    ``b``, the consecutive F dims it is the product of. None if the shapes do not nest."""
    def cuts(s: tuple[int, ...]) -> list[int]:
        return [math.prod(s[:i]) for i in range(1, len(s))]

    points = sorted(set(cuts(a)) | set(cuts(b)))
    bounds = [1, *points, math.prod(a)]
    if any(hi % lo for lo, hi in zip(bounds, bounds[1:])):
        return None
    sizes = [hi // lo for lo, hi in zip(bounds, bounds[1:])]

    edges = [1, *cuts(b), math.prod(b)]
    return sizes, [list(range(bounds.index(lo), bounds.index(hi))) for lo, hi in zip(edges, edges[1:])]


def _coarsens(target: tuple[int, ...], sizes: list[int]) -> bool:
    """Whether ``target`` merges consecutive dims of ``sizes`` (so a reshape to it is a merge only)."""
    cum = {math.prod(sizes[:i]) for i in range(len(sizes) + 1)}
    return all(math.prod(target[:i]) in cum for i in range(len(target) + 1))


def _viewable(lay: Layout, dtype: torch.dtype, sizes: list[int], dims: list[int], final: tuple[int, ...]) -> bool:
    """Whether split -> permute -> reshape(final) of a tensor with layout ``lay`` is a strided view."""
    if is_dynamic((lay.shape, lay.strides, lay.offset)):
        return False
    view: tuple | None = (lay.shape, lay.strides, lay.offset)
    steps = (("reshape", {"shape": sizes}), ("permute", {"dims": dims}), ("reshape", {"shape": list(final)}))
    for op, attrs in steps:
        view = _view_of(get_op(op), dtype, *view, attrs) if view is not None else None
    return view is not None


def run(graph: Graph, ctx: PassContext) -> Graph:
    layouts = compute_layouts(graph, strict=False)
    for name in graph.topo_order():
        if name not in graph or graph.node(name).op != "reshape":
            continue
        r1 = graph.node(name)
        users = graph.users(name)
        if len(users) != 1 or graph.is_output(name) or graph.node(users[0][0]).op != "permute":
            continue
        perm = graph.node(users[0][0])
        p_users = graph.users(perm.name)
        r2 = graph.node(p_users[0][0]) if len(p_users) == 1 and not graph.is_output(perm.name) else None
        if r2 is not None and r2.op != "reshape":
            r2 = None
        needs_copy = layouts.get(Value(name)) is None or (r2 is not None and layouts.get(Value(r2.name)) is None)
        x = graph.inputs_of(name)[0]
        if not needs_copy or layouts.get(x) is None:
            continue
        s0, s1 = graph.spec(x).shape, r1.spec.shape
        last = r2 if r2 is not None else perm
        s2 = last.spec.shape
        if 1 in s0 or 1 in s1 or 1 in s2:
            continue
        ref = _refine(s0, s1)
        if ref is None:
            continue
        sizes, g1 = ref
        fdims = [f for d in perm.attrs["dims"] for f in g1[d]]
        permuted = [sizes[f] for f in fdims]
        if not _coarsens(s2, permuted) or not _viewable(layouts[x], graph.spec(x).dtype, sizes, fdims, s2):
            continue
        split = graph.add("reshape", [x], {"shape": sizes}, name=f"{name}.split", source=r1.source)
        out = graph.add("permute", [Value(split.name)], {"dims": fdims}, name=f"{perm.name}.split",
                        source=perm.source)
        if tuple(permuted) != tuple(s2):
            out = graph.add("reshape", [Value(out.name)], {"shape": list(s2)}, name=f"{last.name}.merge",
                            source=last.source)
        graph.replace_all_uses(Value(last.name), Value(out.name))
        for n in ([r2.name] if r2 is not None else []) + [perm.name, name]:
            graph.remove_node(n)
        ctx.fired(SPLIT_PERMUTE, name, f"{list(s0)} -> {sizes} -> permute {fdims} -> {list(s2)}")
        update_layouts(graph, layouts, [split.name])  # the new views and those downstream of them
    return graph

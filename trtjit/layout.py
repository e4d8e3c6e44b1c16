"""Buffer layouts: which buffer each value lives in, with what strides.

Kernels write contiguous outputs into their own buffer. View ops (reshape, permute, expand, slice,
select, squeeze, unsqueeze) cost no kernel: their layout is computed here, at build time, by applying
the op to a meta tensor with the input's strides, so torch's own view rules decide. A reshape that no
strides can express needs a copy; ``compute_layouts`` reports it so a pass can insert one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trtjit.errors import BuildError
from trtjit.ir import Graph, Value
from trtjit.ops import get_op


@dataclass(frozen=True)
class Layout:
    root: Value
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @property
    def is_contiguous(self) -> bool:
        return self.offset == 0 and self.strides == contiguous_strides(self.shape)


def contiguous_strides(shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(out))


def permuted_strides(shape: tuple[int, ...], perm: list[int]) -> tuple[int, ...]:
    """Strides of a tensor stored so that ``x.permute(perm)`` is contiguous (``out_perm`` on a kernel)."""
    phys = contiguous_strides(tuple(shape[d] for d in perm))
    strides = [0] * len(shape)
    for i, d in enumerate(perm):
        strides[d] = phys[i]
    return tuple(strides)


def is_kernel_node(graph: Graph, name: str) -> bool:
    op = graph.node(name).op
    return op not in ("input", "constant") and get_op(op).kind not in ("view", "source")


def compute_layouts(graph: Graph, strict: bool = True) -> dict[Value, Layout | None]:
    """Layout of every value. A value that needs a copy maps to None (or raises when ``strict``)."""
    out: dict[Value, Layout | None] = {}
    for node in graph:
        _set_layouts(graph, node, out, strict)
    return out


def update_layouts(graph: Graph, layouts: dict[Value, Layout | None], roots: list[str]) -> None:
    """Bring ``layouts`` (non-strict) up to date after a rewrite, in place: drop removed nodes' values, then
    recompute ``roots`` (new nodes, listed producers first) and every view reached from them through view
    inputs. A kernel's output layout does not depend on its inputs and a view's depends on its first input
    alone, so nothing else changes: the result equals ``compute_layouts(graph, strict=False)``, without
    redoing every view of the graph (passes that rewrite views one at a time call this after each)."""
    for v in [v for v in layouts if v.node not in graph]:
        del layouts[v]
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop(0)
        if name in seen or name not in graph:
            continue
        seen.add(name)
        node = graph.node(name)
        _set_layouts(graph, node, layouts, strict=False)
        for i in range(len(node.outputs)):
            todo += [w for w, _ in graph.users(Value(name, i))
                     if get_op(graph.node(w).op).kind == "view" and graph.inputs_of(w)[0] == Value(name, i)]


def _set_layouts(graph: Graph, node: Any, out: dict[Value, Layout | None], strict: bool) -> None:
    """The layouts of ``node``'s outputs into ``out``, given its first input's there (views)."""
    opdef = get_op(node.op)
    if opdef.kind == "composite":
        raise BuildError(f"node {node.name!r}: composite op {node.op!r} reached lowering undecomposed")
    if opdef.kind != "view":
        perm = node.attrs.get("out_perm")
        for i, spec in enumerate(node.outputs):
            strides = contiguous_strides(spec.shape) if not perm else permuted_strides(spec.shape, perm)
            out[Value(node.name, i)] = Layout(Value(node.name, i), spec.shape, strides)
        return
    src = out[graph.inputs_of(node.name)[0]]
    if src is None:
        out[Value(node.name)] = None
        return
    from trtjit.dynamic import is_dynamic, range_of, two_point
    if is_dynamic((src.shape, src.strides, src.offset, node.attrs)):  # batch-proportional: at two batches
        view = two_point(_view_of, range_of((src.shape, src.strides, src.offset, node.attrs)), opdef,
                         node.spec.dtype, src.shape, src.strides, src.offset, node.attrs)
    else:
        view = _view_of(opdef, node.spec.dtype, src.shape, src.strides, src.offset, node.attrs)
    if view is None:
        if strict:
            raise BuildError(f"node {node.name!r}: {node.op} of a non-contiguous tensor needs a copy")
        out[Value(node.name)] = None
        return
    out[Value(node.name)] = Layout(src.root, *view)


def _view_of(opdef: object, dtype: torch.dtype, shape: tuple[int, ...], strides: tuple[int, ...], offset: int,
             attrs: dict) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """(shape, strides, offset) of a view op applied to a tensor with this layout (torch decides, on a meta
    tensor); None when it needs a copy."""
    size = 1 + offset + sum((s - 1) * st for s, st in zip(shape, strides) if s > 0)
    base = torch.empty(size, dtype=dtype, device="meta").as_strided(shape, strides, offset)
    res = opdef.run([base], attrs)[0]  # type: ignore[attr-defined]
    if not res._is_view() and res.numel() > 0:
        return None
    return tuple(res.shape), tuple(res.stride()), int(res.storage_offset())


NHWC_PERM = [0, 2, 3, 1]  # ``out_perm`` storing an NCHW-shaped tensor channels-last


def is_conv_kernel(graph: Graph, name: str) -> bool:
    """Whether the kernel node ``name`` computes a convolution (alone or with a fused epilogue)."""
    n = graph.node(name)
    body = n.attrs.get("body")
    ops = {b.op for b in body} if body is not None else {n.op}
    return bool(ops & {"conv2d", "conv_transpose2d"})


def stores_permuted_4d(graph: Graph, name: str) -> bool:
    """Whether the kernel ``name`` can store its 4-D output(s) permuted (``out_perm``, e.g. NHWC): its template
    stores through the output layout, the output is no graph output, and it has no permutation yet."""
    n = graph.node(name)
    if "out_perm" not in get_op(n.op).attrs or n.attrs.get("out_perm"):
        return False
    # several outputs (an int8 block's fp16 tensor and its quantized copy) share one layout: the templates
    # store every output through the first one's strides
    if len(n.spec.shape) != 4 or len({tuple(o.shape) for o in n.outputs}) != 1 \
            or any(graph.is_output(Value(name, i)) for i in range(len(n.outputs))):
        return False
    if n.op == "fused_gemm":
        return is_conv_kernel(graph, name)
    if len(n.outputs) != 1:
        return False
    if n.op == "fused_reduction":  # only full-shape outputs follow the layout (row statistics are stored dense)
        body = n.attrs["body"]
        red = next(b for b in body if get_op(b.op).kind == "reduction")
        return body.spec(body.inputs_of(red.name)[0]).shape == n.spec.shape
    return n.op in ("fused_pointwise", "fused_reduction", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                    "resize_nearest", "resize_bilinear")

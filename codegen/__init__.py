"""Triton code generation: a few kernel templates plus the op table's per-op expressions.

``generate(graph, node, layouts)`` picks the template from the node's kind (pointwise, reduction,
gemm/conv, pool) and returns a ``KernelSpec`` holding readable Triton source.
"""

from __future__ import annotations

from trtjit.codegen.common import KernelInput, KernelSpec, Operand, ident, literal_of, uses_batch_arg

from trtjit.dynamic import hint
from trtjit.errors import BuildError
from trtjit.ir import Graph, Value
from trtjit.layout import Layout
from trtjit.ops import get_op

_TEMPLATES = {"pointwise": "pointwise", "reduction": "reduction", "gemm": "gemm", "conv": "gemm",
              "pool": "pool", "gather": "gather", "cat": "concat", "attention": "attention", "resize": "resize", "pad": "pad",
              "fused_pointwise": "pointwise", "fused_reduction": "reduction",
              "fused_gemm": "gemm"}


def template_of(graph: Graph, name: str) -> str:
    n = graph.node(name)
    kind = get_op(n.op).kind
    key = n.op if kind == "fused" else kind
    if key not in _TEMPLATES:
        raise BuildError(f"node {name!r}: op {n.op!r} ({kind}) has no kernel template")
    return _TEMPLATES[key]


def kernel_input(graph: Graph, name: str, layouts: dict[Value, Layout], tf32: bool = False,
                 inline_scalars: bool = True) -> KernelInput:
    """Body, operands and pointer arguments of the kernel for node ``name``."""
    node = graph.node(name)
    if get_op(node.op).kind == "fused":
        body, ext = node.attrs["body"], graph.inputs_of(name)
    else:
        body = graph.subgraph([name])
        ext = [Value(n, i) for n, i in body.meta.pop("external_inputs")]
    operand_inputs = {v.node for n in body if n.op in ("matmul", "conv2d", "conv_transpose2d", "sdpa")
                      for v in body.inputs_of(n.name)}
    operands: dict[str, Operand] = {}
    args: list[Value] = []
    pointers: list[str] = []
    by_root: dict[Value, str] = {}
    for bname, v in zip(body.inputs, ext):
        lay = layouts[v]
        src = graph.node(lay.root.node)
        if inline_scalars and src.op == "constant" and src.value.numel() == 1 and graph.spec(v).numel == 1 \
                and bname not in operand_inputs:
            operands[bname] = Operand(None, graph.spec(v).dtype, literal=literal_of(src.value))
            continue
        if lay.root not in by_root:
            by_root[lay.root] = f"in{len(by_root)}"
            args.append(lay.root)
            pointers.append(by_root[lay.root])
        operands[bname] = Operand(lay, graph.spec(v).dtype, pointer=by_root[lay.root])
    outputs = []
    for i, _ in enumerate(body.outputs):
        ptr = f"out{i}"
        outputs.append((ptr, node.outputs[i]))
        args.append(Value(name, i))
        pointers.append(ptr)
    out_layouts = [layouts[Value(name, i)] for i in range(len(body.outputs))]
    tile = graph.meta.get("tiles", {}).get(name)
    return KernelInput(node, body, operands, outputs, args, pointers, tf32, out_layouts, tile)


def generate(graph: Graph, name: str, layouts: dict[Value, Layout], kernel_name: str | None = None,
             tf32: bool = False) -> KernelSpec:
    from trtjit.codegen import attention, concat, gather, gemm, pad, pointwise, pool, reduction, resize

    tpl = template_of(graph, name)
    kin = kernel_input(graph, name, layouts, tf32, inline_scalars=tpl in ("pointwise", "reduction", "gemm", "attention"))
    kname = ident(kernel_name or graph.node(name).attrs.get("kernel_name") or f"{tpl}_{name}")
    mod = {"pointwise": pointwise, "reduction": reduction, "gemm": gemm, "pool": pool, "gather": gather,
           "concat": concat, "attention": attention, "resize": resize, "pad": pad}[tpl]
    spec = mod.generate(kin, kname)
    spec.flops = hint(spec.flops)  # reports count a dynamic batch at opt
    spec.batch_arg = uses_batch_arg(spec.source.split('"""', 2)[-1])  # the body, after the docstring
    return spec


__all__ = ["KernelSpec", "generate", "template_of"]

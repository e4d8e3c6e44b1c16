"""What every kernel template shares: kernel records, operands, index arithmetic and the per-op
expression emitter (driven by the op table's ``expr``).

A template gets a ``KernelInput``: the IR node, its body graph (the fused subgraph, or the node alone),
and the layout of every value it reads. It returns a ``KernelSpec``: readable Triton source, the launch
grid, constexpr block sizes and which buffers to pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trtjit.dynamic import ARG, hint
from trtjit.dynamic import cdiv as cdiv  # re-exported: the templates import it from here (batch-aware)
from trtjit.errors import BuildError
from trtjit.ir import Graph, Node, TensorSpec, Value
from trtjit.layout import Layout
from trtjit.ops import _TL_DTYPES, TL_HELPERS, get_op, lit
from trtjit.xc_worker import PDL_ARG

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
MAX_INDEX = 2**31 - 1


SMS = 132  # streaming multiprocessors of an H100 SXM: default tiles and blocks aim to fill them
FILL_MIN_ELEMENTS = 1 << 16  # below this many elements a kernel is launch-bound: no splitting to fill SMs


@dataclass
class KernelSpec:
    """One generated kernel and how to launch it."""

    name: str
    template: str
    node: str
    source: str
    grid: tuple[int, ...]
    constexprs: dict[str, int]
    args: list[Value]
    covers: list[str]
    rules: list[str] = field(default_factory=list)
    num_warps: int = 4
    num_stages: int = 2
    flops: int = 0
    bytes: int = 0
    problem: dict[str, int] = field(default_factory=dict)  # GEMM/conv: M, N, K, batch (tile candidates use it)
    tile: str = "heuristic"  # where a GEMM/conv tile came from: "heuristic", "tuned" or "cache"
    batch_arg: bool = False  # takes the runtime batch ``nb`` after its pointers (dynamic batch: trtjit.dynamic)
    maxnreg: int = 0  # a register cap per thread (warp-specialized Gluon kernels share it out); 0: none

    def to_json(self) -> dict:
        from trtjit.dynamic import encode
        return {"name": self.name, "template": self.template, "node": self.node, "source": self.source,
                "grid": encode(list(self.grid)), "batch_arg": self.batch_arg, "constexprs": self.constexprs,
                "args": [list(a) for a in self.args], "covers": self.covers, "rules": self.rules,
                "num_warps": self.num_warps, "num_stages": self.num_stages, "flops": self.flops, "bytes": self.bytes,
                "problem": encode(self.problem), "tile": self.tile,
                **({"maxnreg": self.maxnreg} if self.maxnreg else {})}


@dataclass
class Operand:
    """A value a kernel reads: a pointer argument with a layout, or an inlined scalar literal."""

    layout: Layout | None
    dtype: torch.dtype
    pointer: str = ""
    literal: str | None = None


@dataclass
class KernelInput:
    node: Node
    body: Graph
    operands: dict[str, Operand]  # body input name -> operand
    outputs: list[tuple[str, TensorSpec]]  # (pointer name, spec) per body output
    args: list[Value]  # outer buffer roots, pointer order (inputs then outputs)
    pointers: list[str]
    tf32: bool = False
    out_layouts: list[Layout] = field(default_factory=list)  # how each output is stored (see ``out_perm``)
    tile: dict | None = None  # a chosen GEMM/conv tile (``graph.meta["tiles"]``, from the autotune pass)

    @property
    def covers(self) -> list[str]:
        return [n.name for n in self.body if n.op not in ("input", "constant")]


def kernel_identity(source: str, name: str) -> str:
    """What decides a kernel's binary: its source without its name, docstring and comments. Layers that
    differ only in those (the repeated blocks of a network, whose comments name their nodes) share one
    compilation and one binary."""
    s = source.replace(f"def {name}(", "def KERNEL(", 1)
    # the kernel's own docstring, not a helper's written above it (TL_HELPERS: GELU, sigmoid)
    s = re.sub(r'^(def KERNEL\(.*?\):\n)    """.*?"""\n', r"\1", s, count=1, flags=re.M | re.S)
    return re.sub(r"[ \t]*#[^\"'\n]*$", "", s, flags=re.M)


def ident(s: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", s).strip("_")
    return s if s and not s[0].isdigit() else f"k_{s}"


def next_pow2(n: int) -> int:
    """The power of two >= n: a block-size heuristic, so a batch-proportional ``n`` counts at opt."""
    n = hint(n)
    return 1 << max(0, (max(n, 1) - 1).bit_length())


def uses_batch_arg(lines: list[str] | str) -> bool:
    """Whether kernel code (comments aside) reads the runtime batch argument (trtjit.dynamic.ARG)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    return any(re.search(rf"\b{ARG}\b", line.split("#", 1)[0]) for line in text.splitlines())


def check_index_range(node: str, *numels: int) -> None:
    if any(n > MAX_INDEX for n in numels):
        raise BuildError(f"node {node!r}: tensors of more than 2**31-1 elements need 64-bit indexing, "
                         "which this kernel template does not emit yet")


def tl_dtype(dtype: torch.dtype) -> str:
    from trtjit.ir import dtype_name
    return f"tl.{_TL_DTYPES[dtype_name(dtype)]}"


def offset_expr(lay: Layout, out_shape: tuple[int, ...], var: Callable[[int], str | None]) -> tuple[str, set[int]]:
    """Element offset of ``lay`` read at the index of an ``out_shape`` iteration space.

    ``lay`` broadcasts against ``out_shape`` (right-aligned); ``var(j)`` gives the index expression of
    dimension ``j`` of the iteration space. Returns the expression and the dimensions it uses.
    """
    shift = len(out_shape) - len(lay.shape)
    terms, used = [], set()
    for i, (size, stride) in enumerate(zip(lay.shape, lay.strides)):
        if size == 1 or stride == 0:
            continue
        j = i + shift
        v = var(j)
        if v is None:
            raise BuildError(f"internal: no index variable for dimension {j}")
        used.add(j)
        terms.append(v if stride == 1 else f"{v} * {stride}")
    if lay.offset:
        terms.append(str(lay.offset))
    return (" + ".join(terms) if terms else "0"), used


def _is_literal(expr: str) -> bool:
    try:
        float(expr)
        return True
    except ValueError:
        return expr in ("True", "False") or expr.startswith("float(")


def _to_float(args: list[str], dtypes: list[torch.dtype], out_dt: torch.dtype) -> list[str]:
    """Integer operands of an op with a floating result compute in fp32 (torch's promotion)."""
    if not out_dt.is_floating_point:
        return list(args)
    return [a if dt.is_floating_point or _is_literal(a) else f"{a}.to(tl.float32)" for a, dt in zip(args, dtypes)]


def emit_op(node: Node, args: list[str], arg_dtypes: list[torch.dtype]) -> str:
    """The Triton expression of a pointwise node, from the op table's ``expr``."""
    opdef = get_op(node.op)
    if opdef.kind != "pointwise" or opdef.expr is None:
        raise BuildError(f"node {node.name!r}: op {node.op!r} has no pointwise lowering")
    out_dt = node.spec.dtype
    if node.op in ("floor", "ceil") and not out_dt.is_floating_point:
        return args[0]  # identity on integers, as in torch
    if node.op == "where":
        cond = args[0] if arg_dtypes[0] == torch.bool else f"({args[0]} != 0)"
        return "tl.where({}, {}, {})".format(cond, *_to_float(args[1:], arg_dtypes[1:], out_dt))
    if node.op not in ("cast", "bitcast"):
        args = _to_float(args, arg_dtypes, out_dt)
    if node.op == "bitcast":
        return _bitcast_expr(args[0], arg_dtypes[0], out_dt)
    if node.op == "cast" and _is_literal(args[0]):
        return args[0] if out_dt.is_floating_point else f"tl.full([], {args[0]}, {tl_dtype(out_dt)})"
    expr = opdef.expr(args, node.attrs) if callable(opdef.expr) else opdef.expr.format(*args)
    if node.op == "cast" and out_dt in FLOATS:
        expr = f"{expr}.to(tl.float32)"
    return expr


def _bitcast_expr(x: str, in_dt: torch.dtype, out_dt: torch.dtype) -> str:
    """Bit reinterpretation; half/bfloat16 values live in fp32 registers, so they are narrowed first and
    widened after."""
    if _is_literal(x) or in_dt in (torch.float16, torch.bfloat16):
        x = f"tl.full([], {x}, {tl_dtype(in_dt)})" if _is_literal(x) else f"{x}.to({tl_dtype(in_dt)})"
    y = f"{x}.to({tl_dtype(out_dt)}, bitcast=True)"
    return f"{y}.to(tl.float32)" if out_dt in (torch.float16, torch.bfloat16) else y


def literal_of(t: torch.Tensor) -> str:
    x = t.reshape(()).item()
    if t.dtype == torch.bool:
        return lit(bool(x))
    if t.dtype.is_floating_point:
        return lit(float(x))
    return lit(int(x))


def int_literal(v: int) -> str:
    """An integer literal Triton types as int64 even at the int64 minimum (2**63 alone would be uint64)."""
    return f"({v + 1} - 1)" if v == -2**63 else str(v)


def load_cast(expr: str, dtype: torch.dtype) -> str:
    """Loaded half/bfloat16 values compute in fp32."""
    return f"{expr}.to(tl.float32)" if dtype in (torch.float16, torch.bfloat16) else expr


def store_cast(expr: str, dtype: torch.dtype) -> str:
    return expr if dtype in (torch.float32, torch.bool) else f"{expr}.to({tl_dtype(dtype)})"


# Programmatic dependent launch (sm_90+, ``trtjit.engine.Engine.pdl``): every template kernel takes a ``PDL``
# constexpr (False by default, and under the interpreter, which has no griddepcontrol). With it True, the
# kernel's first instructions wait until the previous kernel in the stream has finished and its writes are
# visible, then allow the next kernel to start launching: that kernel's blocks are scheduled while this one's
# last wave drains, and wait the same way before they touch memory. Nothing reads or writes global memory
# before the wait, so buffers the memory plan reuses stay safe.
PDL = PDL_ARG
PDL_PROLOGUE = [f"    if {PDL}:  # programmatic dependent launch: the previous kernel's writes are visible after",
                "        tl.extra.cuda.gdc_wait()",
                "        tl.extra.cuda.gdc_launch_dependents()"]


def takes_pdl(source: str) -> bool:
    """Whether a kernel source has the PDL prologue (every ``Writer`` kernel; a plugin's own kernels do not)."""
    return f"{PDL}: tl.constexpr = False" in source and "tl.extra.cuda.gdc_wait()" in source


class Writer:
    """Builds one kernel's source: header, signature, indented body."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append("    " + line if line else "")

    def source(self, name: str, pointers: list[str], constexprs: list[str], doc: str, prelude: str = "") -> str:
        """The kernel file: imports, the helpers its code calls, ``prelude`` (functions of the template's own,
        placed before the kernel) and the kernel."""
        dyn = uses_batch_arg(self.lines)  # one compiled kernel serves every batch: never specialize on it
        params = ", ".join(pointers + [ARG] * dyn + [f"{c}: tl.constexpr" for c in constexprs]
                           + [f"{PDL}: tl.constexpr = False"])
        code = "\n".join(line.split("#", 1)[0] for line in [*self.lines, *prelude.splitlines()])
        helpers = [src.strip() + "\n\n" for h, src in TL_HELPERS.items() if re.search(rf"\b{h}\(", code)]
        helpers += [prelude.strip() + "\n\n"] if prelude else []
        head = ["import triton", "import triton.language as tl", "", "", *helpers,
                f'@triton.jit(do_not_specialize=["{ARG}"])' if dyn else "@triton.jit",
                f"def {name}({params}):", f'    """{doc}"""', *PDL_PROLOGUE]
        return "\n".join(head + self.lines) + "\n"


class BodyEmitter:
    """Emits the pointwise part of a body: values by name, loads through a template callback."""

    def __init__(self, w: Writer, kin: KernelInput, load: Callable[[str, Node], str]) -> None:
        self.w = w
        self.kin = kin
        self.load = load
        self.vars: dict[Value, str] = {}
        self.count = 0

    def fresh(self, prefix: str = "v") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def value(self, v: Value, consumer: Node) -> str:
        """Expression for ``v`` as read by ``consumer`` (loads body inputs on demand)."""
        if v in self.vars:
            return self.vars[v]
        n = self.kin.body.node(v.node)
        if n.op == "input":
            op = self.kin.operands[n.name]
            if op.literal is not None:
                return op.literal
            return self.load(n.name, consumer)
        if n.op == "constant":
            if n.value.numel() == 1:
                return literal_of(n.value)
            raise BuildError(f"node {n.name!r}: tensor constants inside a fused body are not supported")
        raise BuildError(f"internal: value {v} used before it was computed")

    def emit(self, node: Node) -> str:
        ins = self.kin.body.inputs_of(node.name)
        args = [self.value(v, node) for v in ins]
        dts = [self.kin.body.spec(v).dtype for v in ins]
        var = self.fresh()
        self.w(f"{var} = {emit_op(node, args, dts)}  # {node.name}: {node.op}")
        self.vars[Value(node.name)] = var
        return var


def element_bytes(kin: KernelInput) -> int:
    """Bytes a kernel must move at least: each operand read once, each output written once."""
    read = sum(hint(math.prod(op.layout.shape)) * op.dtype.itemsize for op in kin.operands.values() if op.layout)
    return int(read + sum(hint(s.nbytes) for _, s in kin.outputs))  # a dynamic batch counts at opt



def flat_index(w: Writer, shape: tuple[int, ...], strides: tuple[int, ...], names: list[str]) -> None:
    """Declare ``offs`` (BLOCK consecutive output elements), ``mask`` and one index variable per dimension
    (``names``) for a dense output stored with ``strides`` (contiguous or permuted)."""
    numel = math.prod(shape)
    w("offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)")
    w(f"mask = offs < {numel}")
    outer = max(range(len(shape)), key=lambda j: strides[j], default=0)
    for j, name in enumerate(names):
        e = "offs" if strides[j] == 1 else f"offs // {strides[j]}"
        w(f"{name} = {e}" if j == outer else f"{name} = ({e}) % {shape[j]}")

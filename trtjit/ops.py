"""The op table: every IR op is defined once, here.

An ``OpDef`` holds the op's attribute schema, its shape/dtype inference, its reference implementation in
torch (the numerics oracle, also used by the reference interpreter and constant folding) and how it
lowers: ``kind`` says which kernel template takes it (pointwise, reduction, gemm, conv, pool), ``expr`` is
the Triton expression of a pointwise op, ``decompose`` rewrites a composite op into table ops, and view ops
lower to stride arithmetic with no kernel at all. Adding an op touches this file only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from trtjit.errors import GraphError
from trtjit.ir import DTYPES, TensorSpec, Value, dtype_name

if TYPE_CHECKING:
    from trtjit.ir import Graph, Node

REQUIRED = object()

KINDS = ("source", "pointwise", "reduction", "view", "gemm", "conv", "pool", "gather", "cat", "attention", "resize", "pad", "composite",
         "fused", "plugin")


@dataclass(frozen=True)
class OpDef:
    """Everything trtjit knows about one op."""

    name: str
    kind: str
    ref: Callable[..., Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    arity: int | None = 1
    expr: str | Callable[[list[str], dict], str] | None = None
    decompose: Callable[[Graph, Node, list[Value]], list[Value]] | None = None
    infer_fn: Callable[[list[TensorSpec], dict], list[TensorSpec]] | None = None
    doc: str = ""
    # memo of _infer_static: (input specs, frozen attrs) -> output specs. A transformer's layers repeat the
    # same nodes, and verifying a graph (after passes, on engine load) re-infers every one of them.
    _memo: dict[tuple, tuple[TensorSpec, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def normalize_attrs(self, attrs: dict[str, Any], where: str = "") -> dict[str, Any]:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise GraphError(f"{where}: op {self.name!r} has no attribute(s) {sorted(unknown)}")
        out = {}
        for k, default in self.attrs.items():
            v = attrs.get(k, default)
            if v is REQUIRED:
                raise GraphError(f"{where}: op {self.name!r} needs attribute {k!r}")
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def infer(self, specs: list[TensorSpec], attrs: dict[str, Any]) -> list[TensorSpec]:
        """Output specs; by default computed by running the reference on meta tensors."""
        if self.infer_fn is not None:
            return self.infer_fn(specs, attrs)
        from trtjit.dynamic import is_dynamic, range_of, two_point
        if is_dynamic(specs) or is_dynamic(attrs):  # batch-proportional sizes: torch at two batches, recombined
            rng = range_of(specs) or range_of(attrs)
            res = two_point(lambda sp, at: [(s.shape, s.dtype) for s in self._infer_static(sp, at)], rng, specs, attrs)
            return [TensorSpec(tuple(sh), dt) for sh, dt in res]
        return self._infer_static(specs, attrs)

    def _infer_static(self, specs: list[TensorSpec], attrs: dict[str, Any]) -> list[TensorSpec]:
        key = _frozen((tuple(specs), attrs))
        hit = self._memo.get(key) if key is not None else None
        if hit is not None:
            return list(hit)
        out = self.ref([s.meta() for s in specs], **attrs)
        outs = [TensorSpec.of(t) for t in (out if isinstance(out, (tuple, list)) else [out])]
        if key is not None and len(self._memo) < _MEMO_SIZE:
            self._memo[key] = tuple(outs)
        return outs

    def run(self, inputs: list[torch.Tensor], attrs: dict[str, Any]) -> list[torch.Tensor]:
        """Reference implementation, always returning a list of outputs."""
        out = self.ref(inputs, **attrs)
        return list(out) if isinstance(out, (tuple, list)) else [out]


_MEMO_SIZE = 4096  # entries per op


class _Unkeyed(Exception):
    """A value with no value key (a graph body, a tensor)."""


def _frozen(v: Any) -> Any:
    """A hashable key for ``v`` (specs and attribute values), typed so that 1, 1.0 and True differ; None when
    ``v`` holds something without a value key (a graph body, a tensor): such calls are not memoized."""
    try:
        return _key(v)
    except _Unkeyed:
        return None


def _key(v: Any) -> Any:
    if v is None or isinstance(v, (str, torch.dtype, TensorSpec)):
        return v
    if isinstance(v, (bool, int, float)):
        return type(v).__name__, v
    if isinstance(v, (list, tuple)):
        return ("seq", *(_key(x) for x in v))
    if isinstance(v, dict):
        return ("map", *sorted(((k, _key(x)) for k, x in v.items()), key=lambda kv: str(kv[0])))
    raise _Unkeyed


OPS: dict[str, OpDef] = {}


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise GraphError(f"op {name!r} is not in the op table") from None


_WIDE_UINTS = (torch.uint16, torch.uint32, torch.uint64)
_NATIVE_UINT_REFS = {"bitcast"}  # references that work on the unsigned types as they are


def _wide_uint(ref: Callable[..., Any]) -> Callable[..., Any]:
    """``ref`` computing uint16/32/64 inputs in int64, where torch has kernels, then cast to the output
    dtypes the op has on those inputs (torch's meta kernels cover the unsigned types; its CPU kernels do
    not). Exact for uint16/uint32; uint64 values of 2**63 and more wrap, so comparisons, division and right
    shifts of such values in a reference are off (the generated Triton code computes them unsigned)."""

    def run(ins: list[Any], **attrs: Any) -> Any:
        if not any(isinstance(t, torch.Tensor) and t.dtype in _WIDE_UINTS and not t.is_meta for t in ins):
            return ref(ins, **attrs)
        metas = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in ins]
        want = ref(metas, **attrs)
        wide = [t.to(torch.int64) if isinstance(t, torch.Tensor) and t.dtype in _WIDE_UINTS else t for t in ins]
        out = ref(wide, **attrs)
        if isinstance(out, (tuple, list)):
            return type(out)(o.to(w.dtype) for o, w in zip(out, want))
        return out.to(want.dtype)

    return run


def _register(op: OpDef) -> OpDef:
    assert op.kind in KINDS, op.kind
    assert op.name not in OPS, op.name
    if op.kind not in ("source", "fused", "plugin") and op.name not in _NATIVE_UINT_REFS:
        op = dataclasses.replace(op, ref=_wide_uint(op.ref))
    OPS[op.name] = op
    return op


def lit(x: Any) -> str:
    """A Python/Triton literal for an attribute value."""
    if isinstance(x, bool):
        return "True" if x else "False"
    if isinstance(x, float):
        if math.isinf(x):
            return "float('inf')" if x > 0 else "float('-inf')"
        if math.isnan(x):
            return "float('nan')"
        return repr(x)
    return repr(x)


# ---------------------------------------------------------------------------------------- sources
def _no_ref(*_: Any, **__: Any) -> Any:
    raise GraphError("source nodes have no reference implementation; the interpreter binds them")


_register(OpDef("input", "source", _no_ref, arity=0, infer_fn=lambda s, a: [], doc="graph input"))
_register(OpDef("constant", "source", _no_ref, arity=0, infer_fn=lambda s, a: [], doc="weight or constant"))


# -------------------------------------------------------------------------------------- pointwise
def _pointwise(name: str, arity: int, ref: Callable[..., torch.Tensor], expr: str | Callable,
               attrs: dict[str, Any] | None = None, doc: str = "") -> None:
    def run(ins: list[torch.Tensor], **a: Any) -> torch.Tensor:
        return ref(*ins, **a)

    _register(OpDef(name, "pointwise", run, attrs or {}, arity, expr,
                    doc=doc or (f"elementwise: {expr}" if isinstance(expr, str) else "elementwise")))


# Triton helper functions a pointwise expression may call by name; a kernel's source carries the ones it
# uses (codegen.common.Writer.source), so every emitted file stays self-contained and readable.
TL_HELPERS: dict[str, str] = {
    "_gelu_erf": '''
@triton.jit
def _gelu_erf(x):
    """x * Phi(x), the exact (erf) GELU. In fp32, erfc comes from Abramowitz-Stegun 7.1.26 (|error| <
    1.5e-7, as accurate as torch's fp32 gelu against float64): one branch-free polynomial, 1 / d as
    rsqrt(d)^2 (d >= 1) and exp as exp2, one MUFU op each. libdevice's erff picks one of two polynomials per
    element and costs ~34 instructions an element against ~19 here, which in an FFN GEMM epilogue was
    15-25 us per layer on the H200 (benchmarks/gemm_micro.py --epilogue)."""
    if x.dtype == tl.float64:
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    z = tl.abs(x) * 0.7071067811865476
    r = tl.rsqrt(1.0 + 0.3275911 * z)
    t = r * r
    q = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    q = q * tl.exp2(x * x * -0.7213475204444817)  # erfc(|x| / sqrt(2)); exp(-x^2 / 2) = 2^(-x^2 log2(e) / 2)
    return x * tl.where(x >= 0, 1.0 - 0.5 * q, 0.5 * q)
''',
    "_sigmoid": '''
@triton.jit
def _sigmoid(x):
    """1 / (1 + e^-x) with e^-x as one exp2 (tl.sigmoid's tl.exp adds a denormal range fix in fp32)."""
    if x.dtype == tl.float64:
        return 1.0 / (1.0 + tl.exp(-x))
    return 1.0 / (1.0 + tl.exp2(x * -1.4426950408889634))
''',
}


def _gelu_expr(a: list[str], attrs: dict) -> str:
    x = a[0]
    if attrs["approximate"] == "tanh":
        return f"{x} * _sigmoid(1.5957691216057308 * ({x} + 0.044715 * {x} * {x} * {x}))"
    return f"_gelu_erf({x})"


def _clamp_expr(a: list[str], attrs: dict) -> str:
    e = a[0]
    if attrs["min"] is not None:
        e = f"tl.maximum({e}, {lit(float(attrs['min']))})"
    if attrs["max"] is not None:
        e = f"tl.minimum({e}, {lit(float(attrs['max']))})"
    return e


def _pow_scalar_expr(a: list[str], attrs: dict) -> str:
    p, x = attrs["exponent"], a[0]
    if float(p).is_integer() and 0 <= p <= 4:
        return " * ".join([x] * int(p)) if p else f"({x} * 0.0 + 1.0)"
    if p == 0.5:
        return f"tl.sqrt({x})"
    if p == -0.5:
        return f"tl.rsqrt({x})"
    if float(p).is_integer() and -4 <= p < 0:
        return "1.0 / (" + " * ".join([x] * int(-p)) + ")"
    if float(p).is_integer():  # |x|**p with the sign of x for odd p, as torch gives for negative bases
        mag = f"tl.exp2({lit(float(p))} * tl.log2(tl.abs({x})))"
        return f"tl.where({x} < 0, -{mag}, {mag})" if int(p) % 2 else mag
    return f"tl.exp2({lit(float(p))} * tl.log2({x}))"  # torch gives nan for negative bases too


def _cast_expr(a: list[str], attrs: dict) -> str:
    return f"{a[0]}.to(tl.{_TL_DTYPES[attrs['dtype']]})"


_TL_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64",
              "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
              "bool": "int1", "float8_e4m3fn": "float8e4nv"}
_TL_DTYPES.update({"uint16": "uint16", "uint32": "uint32", "uint64": "uint64"})

_pointwise("neg", 1, torch.neg, "-{0}")
_pointwise("abs", 1, torch.abs, "tl.abs({0})")
_pointwise("exp", 1, torch.exp, "tl.exp({0})")
_pointwise("log", 1, torch.log, "tl.log({0})")
_pointwise("sqrt", 1, torch.sqrt, "tl.sqrt({0})")
_pointwise("rsqrt", 1, torch.rsqrt, "tl.rsqrt({0})")
_pointwise("reciprocal", 1, torch.reciprocal, "1.0 / {0}")
_pointwise("sin", 1, torch.sin, "tl.sin({0})")
_pointwise("cos", 1, torch.cos, "tl.cos({0})")
_pointwise("erf", 1, torch.erf, "tl.erf({0})")
_pointwise("floor", 1, torch.floor, "tl.floor({0})")
_pointwise("ceil", 1, torch.ceil, "tl.ceil({0})")
_pointwise("tanh", 1, torch.tanh, "2.0 * _sigmoid(2.0 * {0}) - 1.0")
_pointwise("sigmoid", 1, torch.sigmoid, "_sigmoid({0})")
_pointwise("relu", 1, torch.relu, "tl.where({0} > 0, {0}, 0.0)")
_pointwise("silu", 1, F.silu, "{0} * _sigmoid({0})")
_pointwise("gelu", 1, lambda x, approximate: F.gelu(x, approximate=approximate), _gelu_expr,
           {"approximate": "none"})
_pointwise("leaky_relu", 1, lambda x, negative_slope: F.leaky_relu(x, negative_slope),
           lambda a, at: f"tl.where({a[0]} > 0, {a[0]}, {a[0]} * {lit(float(at['negative_slope']))})",
           {"negative_slope": 0.01})
_pointwise("elu", 1, lambda x, alpha: F.elu(x, alpha),
           lambda a, at: f"tl.where({a[0]} > 0, {a[0]}, {lit(float(at['alpha']))} * (tl.exp({a[0]}) - 1.0))",
           {"alpha": 1.0})
_pointwise("hardswish", 1, F.hardswish, "{0} * tl.minimum(tl.maximum({0} + 3.0, 0.0), 6.0) / 6.0")
_pointwise("hardsigmoid", 1, F.hardsigmoid, "tl.minimum(tl.maximum({0} + 3.0, 0.0), 6.0) / 6.0")
_pointwise("clamp", 1, lambda x, min, max: torch.clamp(x, min, max), _clamp_expr, {"min": None, "max": None})
_pointwise("pow_scalar", 1, lambda x, exponent: torch.pow(x, exponent), _pow_scalar_expr, {"exponent": REQUIRED})
_pointwise("logical_not", 1, torch.logical_not, "{0} == 0")
_pointwise("cast", 1, lambda x, dtype: x.to(DTYPES[dtype]), _cast_expr, {"dtype": REQUIRED})
_pointwise("bitcast", 1, lambda x, dtype: x.view(DTYPES[dtype]), lambda a, at: f"{a[0]}.to(tl.{_TL_DTYPES[at['dtype']]}, bitcast=True)",
           {"dtype": REQUIRED}, doc="reinterpret the bits as another dtype of the same size")
_pointwise("add", 2, torch.add, "{0} + {1}")
_pointwise("sub", 2, torch.sub, "{0} - {1}")
_pointwise("mul", 2, torch.mul, "{0} * {1}")
_pointwise("div", 2, torch.div, "{0} / {1}")
_pointwise("maximum", 2, torch.maximum, "tl.maximum({0}, {1})")
_pointwise("minimum", 2, torch.minimum, "tl.minimum({0}, {1})")
_pointwise("pow", 2, torch.pow, "tl.exp2({1} * tl.log2({0}))", doc="positive bases only in kernels")
_pointwise("eq", 2, torch.eq, "{0} == {1}")
_pointwise("ne", 2, torch.ne, "{0} != {1}")
_pointwise("lt", 2, torch.lt, "{0} < {1}")
_pointwise("le", 2, torch.le, "{0} <= {1}")
_pointwise("gt", 2, torch.gt, "{0} > {1}")
_pointwise("ge", 2, torch.ge, "{0} >= {1}")
_pointwise("logical_and", 2, torch.logical_and, "({0} != 0) & ({1} != 0)")
_pointwise("logical_or", 2, torch.logical_or, "({0} != 0) | ({1} != 0)")
_pointwise("where", 3, torch.where, "tl.where({0}, {1}, {2})")
_pointwise("bitwise_and", 2, torch.bitwise_and, "{0} & {1}")
_pointwise("bitwise_or", 2, torch.bitwise_or, "{0} | {1}")
_pointwise("bitwise_xor", 2, torch.bitwise_xor, "{0} ^ {1}")
_pointwise("bitwise_not", 1, torch.bitwise_not, "-1 - {0}.to(tl.int64)", doc="elementwise: ~x (-1 - x in int64, stored wrapped)")
_pointwise("bitwise_left_shift", 2, torch.bitwise_left_shift, "{0} << {1}")
_pointwise("bitwise_right_shift", 2, torch.bitwise_right_shift, "{0} >> {1}")


def _atan_expr(a: list[str], attrs: dict) -> str:
    """atan by Cephes' atanf: reduce |x| to [0, tan(pi/8)] around 0, pi/4 or pi/2, then a degree-9 odd
    polynomial (~1e-7 relative error); Triton has no atan."""
    x = a[0]
    ax = f"tl.abs({x})"
    big, mid = f"({ax} > 2.414213562373095)", f"({ax} > 0.41421356237309503)"
    t = f"tl.where({big}, -1.0 / {ax}, tl.where({mid}, ({ax} - 1.0) / ({ax} + 1.0), {ax}))"
    z = f"(({t}) * ({t}))"
    y0 = f"tl.where({big}, 1.5707963267948966, tl.where({mid}, 0.7853981633974483, 0.0))"
    r = (f"({y0} + ({t}) + ({t}) * {z} * (((0.0805374449538 * {z} - 0.138776856032) * {z} + 0.199777106478) "
         f"* {z} - 0.333329491539))")
    return f"tl.where({x} < 0, -{r}, {r})"


_pointwise("atan", 1, torch.atan, _atan_expr, doc="elementwise: atan (Cephes polynomial)")


# -------------------------------------------------------------------------------------- reductions
def _reduction(name: str, fn: Callable[..., torch.Tensor], combine: str) -> None:
    def run(ins: list[torch.Tensor], dims: list[int], keepdim: bool) -> torch.Tensor:
        return fn(ins[0], dim=tuple(dims), keepdim=keepdim)

    _register(OpDef(name, "reduction", run, {"dims": REQUIRED, "keepdim": False}, 1, expr=combine,
                    doc=f"{name} over `dims` (non-negative, sorted)"))


_reduction("sum", torch.sum, "sum")
_reduction("mean", torch.mean, "mean")
_reduction("amax", torch.amax, "max")
_reduction("amin", torch.amin, "min")


# --------------------------------------------------------------------------------------------- views
def _view(name: str, fn: Callable[..., torch.Tensor], attrs: dict[str, Any], doc: str) -> None:
    def run(ins: list[torch.Tensor], **a: Any) -> torch.Tensor:
        return fn(ins[0], **a)

    _register(OpDef(name, "view", run, attrs, 1, doc=doc))


_view("reshape", lambda x, shape: x.reshape(shape), {"shape": REQUIRED}, "reshape (a copy only if strides demand)")
_view("permute", lambda x, dims: x.permute(dims), {"dims": REQUIRED}, "permute dimensions")
_view("expand", lambda x, shape: x.expand(shape), {"shape": REQUIRED}, "broadcast to a shape")
_view("slice", lambda x, dim, start, end, step: x[(slice(None),) * dim + (slice(start, end, step),)],
      {"dim": REQUIRED, "start": 0, "end": None, "step": 1}, "strided slice along one dim")
_view("select", lambda x, dim, index: x.select(dim, index), {"dim": REQUIRED, "index": REQUIRED}, "pick one index")
_view("squeeze", lambda x, dims: x.squeeze(tuple(dims)), {"dims": REQUIRED}, "drop size-1 dims")
_view("unsqueeze", lambda x, dim: x.unsqueeze(dim), {"dim": REQUIRED}, "insert a size-1 dim")
_pointwise("copy", 1, lambda x: x.clone(), "{0}", doc="materialize (contiguous/clone/eval dropout); removed when redundant")


# ------------------------------------------------------------------------------------------ int8
def _exact_int(fn: Callable[[torch.dtype], torch.Tensor], k: int) -> torch.Tensor:
    """An int8 x int8 product-sum as int32, exactly: in float32 when every partial sum stays below 2**24
    (then any summation order is exact; a result that is not integral, from a transforming algorithm,
    falls back), else in float64 (exact below 2**53). torch has no int8 GEMM accumulating wider."""
    if k * 128 * 128 <= 2**24:
        r = fn(torch.float32)
        if r.device.type == "meta" or bool((r == r.round()).all()):  # (meta: shape inference)
            return r.to(torch.int32)
    return fn(torch.float64).round().to(torch.int32)


def _int8_matmul(ins: list[torch.Tensor]) -> torch.Tensor:
    if ins[1].dtype != torch.int8:
        raise GraphError(f"int8 matmul needs two int8 operands, got int8 and {ins[1].dtype}")
    return _exact_int(lambda dt: torch.matmul(ins[0].to(dt), ins[1].to(dt)), ins[0].shape[-1])


def _int8_conv2d(ins: list[torch.Tensor], stride: list[int], padding: list[int], dilation: list[int],
                 groups: int) -> torch.Tensor:
    if ins[1].dtype != torch.int8:
        raise GraphError(f"int8 conv2d needs two int8 operands, got int8 and {ins[1].dtype}")
    return _exact_int(lambda dt: F.conv2d(ins[0].to(dt), ins[1].to(dt), None, stride, padding, dilation, groups),
                      ins[1][0].numel())


def _fp8_matmul(ins: list[torch.Tensor]) -> torch.Tensor:
    """e4m3 x e4m3 -> float32 (products of e4m3 values are exact in float32)."""
    if ins[1].dtype != torch.float8_e4m3fn:
        raise GraphError(f"fp8 matmul needs two float8_e4m3fn operands, got float8_e4m3fn and {ins[1].dtype}")
    return torch.matmul(ins[0].float(), ins[1].float())


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _quantize_fp8_expr(a: list[str], attrs: dict) -> str:
    """Round to the e4m3 grid in fp32 first, then convert: adding and subtracting C = 1.5 * 2**23 * step
    (step = the e4m3 spacing at |t|'s binade, 2**(e - 3), e >= -6) rounds t to a multiple of step with the
    fp32 adder's round-half-to-even; the conversion of a value already on the grid is exact everywhere,
    while Triton 3.6's interpreter rounds some values wrongly in its fp32 -> fp8 conversion (124.98 -> 64)."""
    t = f"tl.minimum(tl.maximum({a[0]} / {lit(float(attrs['scale']))}, -{FP8_MAX}), {FP8_MAX})"
    c = f"tl.exp2(tl.maximum(tl.floor(tl.log2(tl.abs({t}) + 1e-30)), -6.0) + 20.0) * 1.5"
    return f"(({t} + {c}) - {c}).to(tl.float8e4nv)"


_pointwise("quantize_fp8", 1, lambda x, scale: torch.clamp(x.float() / scale, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn),
           _quantize_fp8_expr, {"scale": REQUIRED},
           doc="x -> float8_e4m3fn: x / scale saturated to +-448, rounded to nearest even (precision='fp8')")


def _quantize_ref(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric int8: round half to even (as TensorRT, ONNX QuantizeLinear and torch's fake quantization
    do), saturate to [-128, 127]."""
    return torch.clamp(torch.round(x.float() / scale), -128, 127).to(torch.int8)


def _quantize_expr(a: list[str], attrs: dict) -> str:
    t = f"({a[0]} / {lit(float(attrs['scale']))})"
    r = f"tl.floor({t} + 0.5)"
    even = f"tl.where(({r} - {t} == 0.5) & (tl.floor({r} * 0.5) != {r} * 0.5), {r} - 1.0, {r})"
    return f"tl.minimum(tl.maximum({even}, -128.0), 127.0).to(tl.int8)"


_pointwise("quantize", 1, _quantize_ref, _quantize_expr, {"scale": REQUIRED},
           doc="x -> int8: clamp(round_half_even(x / scale), -128, 127) (per-tensor symmetric scale)")
_pointwise("dequantize", 1, lambda q, scale: q.float() * scale,
           lambda a, at: f"{a[0]}.to(tl.float32) * {lit(float(at['scale']))}", {"scale": REQUIRED},
           doc="int8 -> float32: q * scale (explicit Q/DQ; folded into int8 GEMM/conv by quantize_int8)")


# ------------------------------------------------------------------------------------ gemm, conv, pool
_register(OpDef("matmul", "gemm", lambda ins: _int8_matmul(ins) if ins[0].dtype == torch.int8 else
                _fp8_matmul(ins) if ins[0].dtype == torch.float8_e4m3fn else torch.matmul(ins[0], ins[1]), {}, 2,
                doc="torch.matmul semantics for operands of rank >= 2 (batch dims broadcast); int8 operands "
                    "accumulate exactly into int32 (as ONNX MatMulInteger), fp8 (e4m3) operands into float32"))
_register(OpDef("conv2d", "conv",
                lambda ins, stride, padding, dilation, groups: _int8_conv2d(ins, stride, padding, dilation, groups)
                if ins[0].dtype == torch.int8 else F.conv2d(ins[0], ins[1], None, stride, padding, dilation, groups),
                {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}, 2,
                doc="NCHW 2-D convolution without bias (bias is an add the epilogue fuses)"))
_register(OpDef("conv_transpose2d", "conv",
                lambda ins, stride, padding, output_padding, dilation, groups: F.conv_transpose2d(
                    ins[0], ins[1], None, stride, padding, output_padding, groups, dilation),
                {"stride": [1, 1], "padding": [0, 0], "output_padding": [0, 0], "dilation": [1, 1], "groups": 1}, 2,
                doc="NCHW transposed convolution without bias (an implicit GEMM gathering its inputs)"))
def _resize_ref(ins: list[torch.Tensor], size: list[int], scale_factor: list[float] | None,
                align_corners: bool | None, mode: str) -> torch.Tensor:
    if scale_factor is not None:  # torch maps coordinates with the given factor, not with the size ratio
        return F.interpolate(ins[0], scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                             recompute_scale_factor=False)
    return F.interpolate(ins[0], size=size, mode=mode, align_corners=align_corners)


_register(OpDef("resize_nearest", "resize",
                lambda ins, size, scale_factor, out_perm: _resize_ref(ins, size, scale_factor, None, "nearest"),
                {"size": REQUIRED, "scale_factor": None, "out_perm": None}, 1, doc="nearest resize of NCHW (F.interpolate mode='nearest')"))
_register(OpDef("resize_bilinear", "resize",
                lambda ins, size, scale_factor, align_corners, out_perm: _resize_ref(
                    ins, size, scale_factor, align_corners, "bilinear"),
                {"size": REQUIRED, "scale_factor": None, "align_corners": False, "out_perm": None}, 1,
                doc="bilinear resize of NCHW (F.interpolate mode='bilinear')"))
_register(OpDef("max_pool2d", "pool",
                lambda ins, kernel, stride, padding, dilation, ceil_mode, out_perm: F.max_pool2d(
                    ins[0], kernel, stride, padding, dilation, ceil_mode),
                {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False,
                 "out_perm": None},
                1, expr="max", doc="NCHW max pooling"))
_register(OpDef("adaptive_avg_pool2d", "pool",
                lambda ins, output_size, out_perm: F.adaptive_avg_pool2d(ins[0], output_size),
                {"output_size": REQUIRED, "out_perm": None}, 1, expr="adaptive",
                doc="NCHW adaptive average pooling (windows [floor(i*H/OH), ceil((i+1)*H/OH)))"))
_register(OpDef("avg_pool2d", "pool",
                lambda ins, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, out_perm: F.avg_pool2d(
                    ins[0], kernel, stride, padding, ceil_mode, count_include_pad, divisor_override),
                {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0], "ceil_mode": False,
                 "count_include_pad": True, "divisor_override": None, "out_perm": None}, 1, expr="avg", doc="NCHW average pooling"))


# -------------------------------------------------------------------------------------- gather, cat
_register(OpDef("index_select", "gather", lambda ins, dim: torch.index_select(ins[0], dim, ins[1]), {"dim": REQUIRED},
                2, doc="rows of x along `dim` picked by a 1-D integer index (embedding lookups lower to it)"))
_register(OpDef("gather", "gather", lambda ins, dim: torch.gather(ins[0], dim, ins[1]), {"dim": REQUIRED}, 2,
                doc="torch.gather: out[i][j] = x[index[i][j]][j] along `dim`"))
_register(OpDef("cat", "cat", lambda ins, dim: torch.cat(ins, dim), {"dim": REQUIRED}, None,
                doc="concatenate along `dim` (one kernel reading every input)"))


def _pad_ref(ins: list[torch.Tensor], before: list[int], after: list[int], mode: str, value: float) -> torch.Tensor:
    pads = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    if mode == "constant":
        return F.pad(ins[0], pads, mode="constant", value=value)
    lead = len(before) - len(pads) // 2
    while lead < len(before) and before[lead] == 0 and after[lead] == 0 and len(before) - lead > 1:
        lead += 1  # torch's non-constant modes pad only trailing dims: pass just the padded ones
    pads = [p for b, a in zip(reversed(before[lead:]), reversed(after[lead:])) for p in (b, a)]
    x = ins[0]
    squeeze = x.dim() == len(pads) // 2  # torch wants a batch (and channel) dim in front of the padded ones
    y = F.pad(x.unsqueeze(0) if squeeze else x, pads, mode=mode)
    return y.squeeze(0) if squeeze else y


_register(OpDef("pad", "pad", _pad_ref, {"before": REQUIRED, "after": REQUIRED, "mode": "constant", "value": 0.0},
                1, doc="pad every dim by before/after elements: constant, reflect, replicate or circular"))


# ---------------------------------------------------------------------------------------- composites
def _const(g: Graph, like: Node, suffix: str, value: float | torch.Tensor, dtype: torch.dtype) -> Value:
    t = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype)
    return g.add_constant(f"{like.name}.{suffix}", t.to(dtype), source=like.source)


def _add(g: Graph, like: Node, op: str, ins: Sequence[Value], suffix: str, **attrs: Any) -> Value:
    return Value(g.add(op, ins, attrs, name=f"{like.name}.{suffix}", source=like.source).name)


def _dims(n: Node, g: Graph, v: Value, dims: Sequence[int]) -> list[int]:
    rank = len(g.spec(v).shape)
    return sorted(d % rank for d in dims)


def _dec_softmax(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    d = _dims(n, g, x, [n.attrs["dim"]])
    m = _add(g, n, "amax", [x], "max", dims=d, keepdim=True)
    sh = _add(g, n, "sub", [x, m], "shift")
    e = _add(g, n, "exp", [sh], "exp")
    s = _add(g, n, "sum", [e], "sum", dims=d, keepdim=True)
    if n.op == "log_softmax":
        return [_add(g, n, "sub", [sh, _add(g, n, "log", [s], "log")], "out")]
    return [_add(g, n, "div", [e, s], "out")]


def _dec_layer_norm(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    x, dt = ins[0], g.spec(ins[0]).dtype
    rank = len(g.spec(x).shape)
    dims = list(range(rank - len(n.attrs["normalized_shape"]), rank))
    if n.op == "layer_norm":
        mu = _add(g, n, "mean", [x], "mean", dims=dims, keepdim=True)
        x = _add(g, n, "sub", [x, mu], "center")
    sq = _add(g, n, "mul", [x, x], "square")
    var = _add(g, n, "mean", [sq], "var", dims=dims, keepdim=True)
    eps = n.attrs["eps"] if n.attrs["eps"] is not None else torch.finfo(dt).eps
    r = _add(g, n, "rsqrt", [_add(g, n, "add", [var, _const(g, n, "eps", eps, dt)], "var_eps")], "rstd")
    y = _add(g, n, "mul", [x, r], "norm")
    rest = ins[1:]
    if rest:
        y = _add(g, n, "mul", [y, rest[0]], "scale")
    if len(rest) > 1:
        y = _add(g, n, "add", [y, rest[1]], "shift")
    return [y]


def _dec_batch_norm(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    x, mean, var, w, b = ins
    dt = g.spec(x).dtype
    bshape = [1, g.spec(x).shape[1]] + [1] * (len(g.spec(x).shape) - 2)
    r = _add(g, n, "rsqrt", [_add(g, n, "add", [var, _const(g, n, "eps", n.attrs["eps"], dt)], "var_eps")], "rstd")
    scale = _add(g, n, "mul", [w, r], "scale")
    shift = _add(g, n, "sub", [b, _add(g, n, "mul", [mean, scale], "mean_scale")], "shift")
    scale = _add(g, n, "reshape", [scale], "scale_b", shape=bshape)
    shift = _add(g, n, "reshape", [shift], "shift_b", shape=bshape)
    return [_add(g, n, "add", [_add(g, n, "mul", [x, scale], "mul"), shift], "out")]


def _dec_linear(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    wt = _add(g, n, "permute", [ins[1]], "weight_t", dims=[1, 0])
    y = _add(g, n, "matmul", [ins[0], wt], "matmul")
    if len(ins) > 2:
        y = _add(g, n, "add", [y, ins[2]], "bias")
    return [y]


def _dec_var(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    x = ins[0]
    shape = g.spec(x).shape
    dims = n.attrs["dims"]
    count = math.prod(shape[d] for d in dims)
    mu = _add(g, n, "mean", [x], "mean", dims=dims, keepdim=True)
    c = _add(g, n, "sub", [x, mu], "center")
    ss = _add(g, n, "sum", [_add(g, n, "mul", [c, c], "square")], "sumsq", dims=dims, keepdim=n.attrs["keepdim"])
    denom = max(count - n.attrs["correction"], 0)
    return [_add(g, n, "mul", [ss, _const(g, n, "inv_n", 1.0 / denom if denom else float("inf"),
                                          g.spec(x).dtype)], "out")]


def _composite(name: str, ref: Callable[..., torch.Tensor], attrs: dict[str, Any], arity: int | None,
               dec: Callable[[Graph, Node, list[Value]], list[Value]], doc: str) -> None:
    _register(OpDef(name, "composite", ref, attrs, arity, decompose=dec, doc=doc))


_composite("softmax", lambda ins, dim: torch.softmax(ins[0], dim), {"dim": REQUIRED}, 1, _dec_softmax,
           "softmax => max, sub, exp, sum, div (one row kernel after reduction fusion)")
_composite("log_softmax", lambda ins, dim: torch.log_softmax(ins[0], dim), {"dim": REQUIRED}, 1, _dec_softmax,
           "log-softmax => max, sub, exp, sum, log, sub")
_composite("layer_norm", lambda ins, normalized_shape, eps: F.layer_norm(
    ins[0], normalized_shape, *(ins[1:] + [None] * (3 - len(ins))), eps=eps),
    {"normalized_shape": REQUIRED, "eps": 1e-5}, None, _dec_layer_norm,
    "LayerNorm over trailing dims; inputs x[, weight[, bias]]")
_composite("rms_norm", lambda ins, normalized_shape, eps: F.rms_norm(
    ins[0], normalized_shape, ins[1] if len(ins) > 1 else None, eps=eps),
    {"normalized_shape": REQUIRED, "eps": None}, None, _dec_layer_norm, "RMSNorm; inputs x[, weight]")
_composite("batch_norm", lambda ins, eps: F.batch_norm(ins[0], ins[1], ins[2], ins[3], ins[4], False, 0.0, eps),
           {"eps": 1e-5}, 5, _dec_batch_norm, "inference BatchNorm; inputs x, mean, var, weight, bias")
_composite("linear", lambda ins: F.linear(*ins), {}, None, _dec_linear, "x @ W^T (+ b)")
def _sdpa_ref(ins: list[torch.Tensor], is_causal: bool, scale: float | None, enable_gqa: bool, out_perm: Any,
              mask_fill: float | None = None) -> torch.Tensor:
    if mask_fill is None or len(ins) < 4:
        return F.scaled_dot_product_attention(*ins[:3], attn_mask=ins[3] if len(ins) > 3 else None,
                                              is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    q, k, v, keep = ins  # eager softmax(where(keep, q @ k^T * scale, mask_fill)) @ v, rows of fills included
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k, v = (t.repeat_interleave(q.shape[-3] // t.shape[-3], dim=-3) for t in (k, v))
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(torch.where(keep, s, torch.tensor(mask_fill, dtype=s.dtype)), dim=-1) @ v


_register(OpDef("sdpa", "attention", _sdpa_ref,
    {"is_causal": False, "scale": None, "enable_gqa": False, "out_perm": None, "mask_fill": None}, None,
    doc="scaled_dot_product_attention (inputs q, k, v[, mask]): one flash-attention kernel; mask_fill: the "
        "finite score a boolean mask writes (eager masked_fill), else -inf with fully masked rows giving 0"))
def _dec_embedding(g: Graph, n: Node, ins: list[Value]) -> list[Value]:
    w, idx = ins
    flat = _add(g, n, "reshape", [idx], "flat_ids", shape=[g.spec(idx).numel])
    rows = _add(g, n, "index_select", [w, flat], "rows", dim=0)
    return [_add(g, n, "reshape", [rows], "out", shape=list(g.spec(idx).shape) + [g.spec(w).shape[1]])]


_composite("embedding", lambda ins: F.embedding(ins[1], ins[0]), {}, 2, _dec_embedding,
           "embedding lookup; inputs weight, indices")
_composite("var", lambda ins, dims, correction, keepdim: torch.var(ins[0], dims, correction=correction,
                                                                    keepdim=keepdim),
           {"dims": REQUIRED, "correction": 1, "keepdim": False}, 1, _dec_var, "variance")


# ------------------------------------------------------------------------------------------ plugins
def _plugin_ref(ins: list[torch.Tensor], **attrs: Any) -> list[torch.Tensor]:
    from trtjit.plugins import plugin_reference

    return plugin_reference(ins, **attrs)


def _plugin_infer(specs: list[TensorSpec], attrs: dict) -> list[TensorSpec]:
    from trtjit.plugins import plugin_infer

    return plugin_infer(specs, attrs)


_register(OpDef("plugin", "plugin", _plugin_ref, {"name": REQUIRED, "version": "1", "namespace": "", "state": "",
                                                  "format": None, "workspace": 0, "max_batch": 0}, None,
                infer_fn=_plugin_infer, doc="a registered plugin (trtjit.plugins); engines call its enqueue"))


# ------------------------------------------------------------------------------------- fused groups
def _fused_ref(ins: list[torch.Tensor], body: Graph, **_: Any) -> list[torch.Tensor]:
    """Interpret the body. (``out_perm`` only changes how a kernel stores its output, not its value.)"""
    from trtjit.interpreter import run_graph

    return run_graph(body, ins)


def _fused_infer(specs: list[TensorSpec], attrs: dict) -> list[TensorSpec]:
    body: Graph = attrs["body"]
    want = [body.spec(Value(n)) for n in body.inputs]
    if want != list(specs):
        raise GraphError(f"fused body expects inputs {[str(s) for s in want]}, got {[str(s) for s in specs]}")
    return [body.spec(v) for v in body.outputs]


for _name, _doc in [("fused_pointwise", "pointwise ops fused into one kernel"),
                    ("fused_reduction", "row reductions with their prologue and epilogue in one kernel"),
                    ("fused_gemm", "matmul or conv with its epilogue in one kernel")]:
    _register(OpDef(_name, "fused", _fused_ref, {"body": REQUIRED, "rules": [], "kernel_name": "", "out_perm": None},
                    None, infer_fn=_fused_infer, doc=_doc))


def describe_ops() -> list[tuple[str, str, str]]:
    """(name, kind, doc) for every op, for `trtjit ops`."""
    return [(o.name, o.kind, o.doc) for o in sorted(OPS.values(), key=lambda o: (KINDS.index(o.kind), o.name))]


__all__ = ["OPS", "OpDef", "REQUIRED", "describe_ops", "dtype_name", "get_op", "lit"]

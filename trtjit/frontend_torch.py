"""Torch frontend: ``torch.export`` (non-strict, which imports more models) then ATen ops to IR ops.

Each converter below maps one ATen op to table ops. Node names trace back to the module path that
produced them (``layer1.0.conv1``); weights become constant nodes named by their state-dict key.
A model with unsupported ops fails once, listing every unsupported op and where each appears.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torch.fx.operator_schemas import normalize_function
from torch.utils import _pytree as pytree

from trtjit.dynamic import GuardError
from trtjit.errors import BuildError, InputError, TrtjitError, UnsupportedOpError
from trtjit.ir import Graph, TensorSpec, Value

Converter = Callable[["Ctx", dict[str, Any]], Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def supported_aten_ops() -> list[str]:
    return sorted(CONVERTERS)


class _Unsupported:
    """Stands for the outputs of an op that could not be converted, so import can go on collecting.
    ``what`` names an output a converter does not produce (max_pool2d's indices): an error once used."""

    def __init__(self, what: str = "") -> None:
        self.what = what


class Ctx:
    """Conversion state for one fx node: adds IR nodes named after the node's module path."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.name = ""
        self.source = ""
        self.target = ""
        self.node_val_shape: tuple[int, ...] = ()  # the shape torch.export recorded for the current node
        self.batch: Any = None  # the BatchRange of a dynamic-batch export (trtjit.dynamic), else None

    def add(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Add a node; the first one an fx node makes takes its name, later ones ``<name>.<op>``."""
        name = self.name if self.name not in self.g else f"{self.name}.{op}"
        return Value(self.g.add(op, list(inputs), attrs, name=name, source=self.source).name)

    def spec(self, v: Value) -> TensorSpec:
        return self.g.spec(v)

    def rank(self, v: Value) -> int:
        return len(self.spec(v).shape)

    def scalar(self, x: Any, like: Value | None = None) -> Value:
        """A 0-d constant for a Python scalar, with torch's promotion category."""
        if isinstance(x, Value):
            return x
        like_dt = self.spec(like).dtype if like is not None else None
        if isinstance(x, bool):
            dt = torch.bool
        elif isinstance(x, float):
            dt = like_dt if like_dt is not None and like_dt.is_floating_point else torch.get_default_dtype()
        elif isinstance(x, int):
            dt = like_dt if like_dt is not None else torch.int64
        else:
            raise BuildError(f"node {self.name!r}: unsupported scalar argument {x!r}")
        return self.g.add_constant(f"{self.name}.scalar", torch.tensor(x, dtype=dt), source=self.source)


def _dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


# ------------------------------------------------------------------------------------ pointwise ops
_UNARY = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "exp": "exp", "log": "log", "sqrt": "sqrt",
          "rsqrt": "rsqrt", "neg": "neg", "abs": "abs", "erf": "erf", "sin": "sin", "cos": "cos",
          "reciprocal": "reciprocal", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "silu": "silu",
          "floor": "floor", "ceil": "ceil", "logical_not": "logical_not"}


def _unary(op: str) -> Converter:
    return lambda c, a: c.add(op, [a["input"]])


for _aten, _op in _UNARY.items():
    converter(f"aten.{_aten}")(_unary(_op))


@converter("aten.bitwise_not")
def _bitwise_not(c: Ctx, a: dict[str, Any]) -> Value:
    """``~mask`` on booleans is logical not (the usual ``masked_fill(~keep, ...)``), on integers bitwise."""
    x = a["input"]
    return c.add("logical_not" if c.spec(x).dtype == torch.bool else "bitwise_not", [x])


@converter("aten.__and__", "aten.__or__", "aten.bitwise_and", "aten.bitwise_or")
def _and_or(c: Ctx, a: dict[str, Any]) -> Value:
    """``mask_a & mask_b`` (Mistral's sliding-window mask): logical on booleans, bitwise on integers."""
    x = a["input"]
    y = c.scalar(a["other"], x)
    logical = c.spec(x).dtype == torch.bool and c.spec(y).dtype == torch.bool
    op = ("logical_" if logical else "bitwise_") + ("and" if "and" in c.target else "or")
    return c.add(op, [x, y])


@converter("aten.new_ones", "aten.new_zeros", "aten.new_full")
def _new_filled(c: Ctx, a: dict[str, Any]) -> Value:
    """A constant of the given size; the tensor argument only lends its dtype."""
    dtype = a.get("dtype") or c.spec(a["input"]).dtype
    fill = {"aten.new_ones": 1, "aten.new_zeros": 0}.get(c.target, a.get("fill_value"))
    return c.g.add_constant(f"{c.name}.filled", torch.full([int(n) for n in a["size"]], fill, dtype=dtype),
                            source=c.source)


def _binary(op: str) -> Converter:
    def conv(c: Ctx, a: dict[str, Any]) -> Value:
        x, y = a["input"], a["other"]
        if not isinstance(x, Value):
            x = c.scalar(x, y)
        y = c.scalar(y, x)
        if a.get("alpha", 1) != 1:
            y = c.add("mul", [y, c.scalar(a["alpha"], y)])
        return c.add(op, [x, y])
    return conv


for _aten, _op in {"add": "add", "sub": "sub", "mul": "mul", "maximum": "maximum", "minimum": "minimum",
                   "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
                   "logical_and": "logical_and", "logical_or": "logical_or"}.items():
    converter(f"aten.{_aten}")(_binary(_op))


@converter("aten.div")
def _div(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("rounding_mode") is not None:
        raise BuildError(f"node {c.name!r}: div with rounding_mode={a['rounding_mode']!r} is not supported")
    return _binary("div")(c, a)


@converter("aten.rsub")
def _rsub(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    y = c.scalar(a["other"], x)
    if a.get("alpha", 1) != 1:
        x = c.add("mul", [x, c.scalar(a["alpha"], x)])
    return c.add("sub", [y, x])


@converter("aten.pow")
def _pow(c: Ctx, a: dict[str, Any]) -> Value:
    base, exp = a["input"], a["exponent"]
    if isinstance(base, Value) and not isinstance(exp, Value):
        return c.add("pow_scalar", [base], exponent=float(exp))
    return c.add("pow", [c.scalar(base, exp if isinstance(exp, Value) else None), c.scalar(exp, base)])


@converter("aten.gelu")
def _gelu(c: Ctx, a: dict[str, Any]) -> Value:
    return c.add("gelu", [a["input"]], approximate=a.get("approximate", "none"))


@converter("aten.leaky_relu")
def _leaky(c: Ctx, a: dict[str, Any]) -> Value:
    return c.add("leaky_relu", [a["input"]], negative_slope=float(a.get("negative_slope", 0.01)))


@converter("aten.elu")
def _elu(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("scale", 1) != 1 or a.get("input_scale", 1) != 1:
        raise BuildError(f"node {c.name!r}: elu with scale/input_scale is not supported")
    return c.add("elu", [a["input"]], alpha=float(a.get("alpha", 1.0)))


@converter("aten.hardtanh", "aten.clamp", "aten.clamp_min", "aten.clamp_max", "aten.relu6")
def _clamp(c: Ctx, a: dict[str, Any]) -> Value:
    lo = a.get("min", a.get("min_val", 0.0 if "max_val" not in a and "max" not in a else None))
    hi = a.get("max", a.get("max_val"))
    if c.target == "aten.relu6":
        lo, hi = 0.0, 6.0
    if isinstance(lo, Value) or isinstance(hi, Value):
        raise BuildError(f"node {c.name!r}: clamp with tensor bounds is not supported")
    return c.add("clamp", [a["input"]], min=None if lo is None else float(lo), max=None if hi is None else float(hi))


@converter("aten.where")
def _where(c: Ctx, a: dict[str, Any]) -> Value:
    x, y = a["input"], a["other"]
    if not isinstance(x, Value):
        x = c.scalar(x, y if isinstance(y, Value) else None)
    return c.add("where", [a["condition"], x, c.scalar(y, x)])


@converter("aten.masked_fill")
def _masked_fill(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    return c.add("where", [a["mask"], c.scalar(a["value"], x), x])


def _cast_or_copy(c: Ctx, x: Value, dtype: torch.dtype | None) -> Value:
    if dtype is None or dtype == c.spec(x).dtype:
        return c.add("copy", [x])
    from trtjit.ir import dtype_name
    return c.add("cast", [x], dtype=dtype_name(dtype))


@converter("aten.contiguous", "aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy")
def _copy(c: Ctx, a: dict[str, Any]) -> Value:
    return c.add("copy", [a["input"]])


@converter("aten.dropout", "aten.feature_dropout")
def _dropout(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("train"):
        raise BuildError(f"node {c.name!r}: dropout in training mode; call model.eval() before compiling")
    return c.add("copy", [a["input"]])


@converter("aten.to", "aten._to_copy")
def _to(c: Ctx, a: dict[str, Any]) -> Value:
    dev = a.get("device")
    if dev is not None and not isinstance(dev, torch.device):
        dev = torch.device(dev)
    return _cast_or_copy(c, a["input"], a.get("dtype"))


@converter("aten.type_as")
def _type_as(c: Ctx, a: dict[str, Any]) -> Value:
    return _cast_or_copy(c, a["input"], c.spec(a["other"]).dtype)


# ------------------------------------------------------------------------------------- reductions
def _reduce(op: str) -> Converter:
    def conv(c: Ctx, a: dict[str, Any]) -> Value:
        x = a["input"]
        if a.get("dtype") is not None and a["dtype"] != c.spec(x).dtype:
            x = _cast_or_copy(c, x, a["dtype"])
        dims = a.get("dim")
        rank = c.rank(x)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(rank))
        if isinstance(dims, int):
            dims = [dims]
        return c.add(op, [x], dims=sorted(_dim(d, rank) for d in dims), keepdim=bool(a.get("keepdim", False)))
    return conv


converter("aten.sum")(_reduce("sum"))
converter("aten.mean")(_reduce("mean"))
converter("aten.amax")(_reduce("amax"))
converter("aten.amin")(_reduce("amin"))


@converter("aten.var")
def _var(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    rank = c.rank(x)
    dims = a.get("dim")
    dims = list(range(rank)) if not dims else ([dims] if isinstance(dims, int) else dims)
    corr = a.get("correction")
    if corr is None:
        corr = 1 if a.get("unbiased", True) else 0
    return c.add("var", [x], dims=sorted(_dim(d, rank) for d in dims), correction=int(corr),
                 keepdim=bool(a.get("keepdim", False)))


@converter("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax")
def _softmax(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    if a.get("dtype") is not None:
        x = _cast_or_copy(c, x, a["dtype"])
    if a.get("half_to_float"):
        x = _cast_or_copy(c, x, torch.float32)
    op = "log_softmax" if "log" in c.target else "softmax"
    return c.add(op, [x], dim=_dim(a["dim"], c.rank(x)))


@converter("aten.layer_norm")
def _layer_norm(c: Ctx, a: dict[str, Any]) -> Value:
    ins = [a["input"]]
    if a.get("weight") is not None:
        ins.append(a["weight"])
        if a.get("bias") is not None:
            ins.append(a["bias"])
    elif a.get("bias") is not None:
        ones = torch.ones(list(a["normalized_shape"]), dtype=c.spec(a["input"]).dtype)
        ins += [c.g.add_constant(f"{c.name}.ones", ones, c.source), a["bias"]]
    return c.add("layer_norm", ins, normalized_shape=list(a["normalized_shape"]), eps=float(a.get("eps", 1e-5)))


@converter("aten.rms_norm")
def _rms_norm(c: Ctx, a: dict[str, Any]) -> Value:
    ins = [a["input"]] + ([a["weight"]] if a.get("weight") is not None else [])
    eps = a.get("eps")
    return c.add("rms_norm", ins, normalized_shape=list(a["normalized_shape"]),
                 eps=None if eps is None else float(eps))


def _bn_inputs(c: Ctx, a: dict[str, Any]) -> list[Value]:
    x = a["input"]
    ch = c.spec(x).shape[1]
    dt = c.spec(x).dtype
    mean, var = a.get("running_mean"), a.get("running_var")
    if mean is None or var is None:
        raise BuildError(f"node {c.name!r}: batch_norm without running statistics needs training mode")
    w = a.get("weight") if a.get("weight") is not None else c.g.add_constant(f"{c.name}.ones", torch.ones(ch, dtype=dt))
    b = a.get("bias") if a.get("bias") is not None else c.g.add_constant(f"{c.name}.zeros", torch.zeros(ch, dtype=dt))
    return [x, mean, var, w, b]


@converter("aten.batch_norm")
def _batch_norm(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("training"):
        raise BuildError(f"node {c.name!r}: batch_norm in training mode; call model.eval() before compiling")
    return c.add("batch_norm", _bn_inputs(c, a), eps=float(a["eps"]))


@converter("aten._native_batch_norm_legit_no_training")
def _native_bn(c: Ctx, a: dict[str, Any]) -> tuple:
    y = c.add("batch_norm", _bn_inputs(c, a), eps=float(a["eps"]))
    return (y, _Unsupported(), _Unsupported())


# ----------------------------------------------------------------------------------------- gemm
@converter("aten.linear")
def _linear(c: Ctx, a: dict[str, Any]) -> Value:
    ins = [a["input"], a["weight"]] + ([a["bias"]] if a.get("bias") is not None else [])
    return c.add("linear", ins)


def matmul_nd(c: Any, x: Any, y: Any, zero_d_error: str) -> Any:
    """torch.matmul / ONNX MatMul semantics on the rank>=2 ``matmul`` op: 1-D operands are unsqueezed and
    the added dim squeezed away again. ``c`` is either frontend's context (``add``, ``rank``)."""
    rx, ry = c.rank(x), c.rank(y)
    if rx == 0 or ry == 0:
        raise BuildError(zero_d_error)
    if rx == 1:
        x = c.add("unsqueeze", [x], dim=0)
    if ry == 1:
        y = c.add("unsqueeze", [y], dim=1)
    out = c.add("matmul", [x, y])
    if rx == 1 and ry == 1:
        return c.add("reshape", [out], shape=[])
    if rx == 1:
        return c.add("squeeze", [out], dims=[c.rank(out) - 2])
    if ry == 1:
        return c.add("squeeze", [out], dims=[c.rank(out) - 1])
    return out


def _matmul(c: Ctx, x: Value, y: Value) -> Value:
    return matmul_nd(c, x, y, f"node {c.name!r}: matmul of a 0-d tensor")


@converter("aten.matmul", "aten.mm", "aten.bmm")
def _mm(c: Ctx, a: dict[str, Any]) -> Value:
    return _matmul(c, a["input"], a.get("other", a.get("mat2")))


@converter("aten.addmm", "aten.baddbmm")
def _addmm(c: Ctx, a: dict[str, Any]) -> Value:
    y = _matmul(c, a.get("mat1", a.get("batch1")), a.get("mat2", a.get("batch2")))
    if a.get("alpha", 1) != 1:
        y = c.add("mul", [y, c.scalar(float(a["alpha"]), y)])
    bias = a["input"]
    if a.get("beta", 1) != 1:
        bias = c.add("mul", [bias, c.scalar(float(a["beta"]), bias)])
    return c.add("add", [y, bias])


def _batch_optional(key: str, rank: int) -> Callable[[Converter], Converter]:
    """torch also takes these ops unbatched (one dim fewer): convert with a size-1 batch dim and drop it."""
    def deco(fn: Converter) -> Converter:
        def conv(c: Ctx, a: dict[str, Any]) -> Any:
            x = a.get(key)
            if not isinstance(x, Value) or c.rank(x) != rank - 1:
                return fn(c, a)
            out = fn(c, {**a, key: c.add("unsqueeze", [x], dim=0)})
            if isinstance(out, tuple) and not isinstance(out, Value):  # (values, unsupported outputs)
                return (c.add("squeeze", [out[0]], dims=[0]), *out[1:])
            return c.add("squeeze", [out], dims=[0])
        return conv
    return deco


@converter("aten.scaled_dot_product_attention")
@_batch_optional("query", 3)
def _sdpa(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("dropout_p", 0.0):
        raise BuildError(f"node {c.name!r}: scaled_dot_product_attention with dropout_p > 0")
    ins = [a["query"], a["key"], a["value"]] + ([a["attn_mask"]] if a.get("attn_mask") is not None else [])
    scale = a.get("scale")
    return c.add("sdpa", ins, is_causal=bool(a.get("is_causal", False)), scale=None if scale is None else float(scale),
                 enable_gqa=bool(a.get("enable_gqa", False)))


def _pair(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v


@converter("aten.conv2d", "aten.convolution")
@_batch_optional("input", 4)
def _conv2d(c: Ctx, a: dict[str, Any]) -> Value:
    x, w = a["input"], a["weight"]
    if a.get("transposed"):
        return _conv_transpose2d(c, a)
    if c.rank(x) != 4:
        raise BuildError(f"node {c.name!r}: only 2-D convolution (NCHW input) is supported, input is "
                         f"{c.spec(x)}")
    padding = a.get("padding", 0)
    dil = _pair(a.get("dilation", 1))
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":  # as ATen: total d*(k-1), the odd element padded at the end explicitly
            k = c.spec(w).shape[2:]
            tot = [d * (kk - 1) for d, kk in zip(dil, k)]
            padding = [t // 2 for t in tot]
            extra = [t - 2 * (t // 2) for t in tot]
            if any(extra):
                x = c.add("pad", [x], before=[0, 0, 0, 0], after=[0, 0, *extra], mode="constant", value=0.0)
        else:
            raise BuildError(f"node {c.name!r}: unknown padding mode {padding!r}")
    y = c.add("conv2d", [x, w], stride=_pair(a.get("stride", 1)), padding=_pair(padding), dilation=dil,
              groups=int(a.get("groups", 1)))
    if a.get("bias") is not None:
        b = c.add("reshape", [a["bias"]], shape=[1, -1, 1, 1])
        y = c.add("add", [y, b])
    return y


@converter("aten.conv_transpose2d")
@_batch_optional("input", 4)
def _conv_transpose2d(c: Ctx, a: dict[str, Any]) -> Value:
    x, w = a["input"], a["weight"]
    if c.rank(x) != 4:
        raise BuildError(f"node {c.name!r}: only 2-D transposed convolution (NCHW input) is supported, input is "
                         f"{c.spec(x)}")
    y = c.add("conv_transpose2d", [x, w], stride=_pair(a.get("stride", 1)), padding=_pair(a.get("padding", 0)),
              output_padding=_pair(a.get("output_padding", 0)), dilation=_pair(a.get("dilation", 1)),
              groups=int(a.get("groups", 1)))
    if a.get("bias") is not None:
        y = c.add("add", [y, c.add("reshape", [a["bias"]], shape=[1, -1, 1, 1])])
    return y


@converter("aten.upsample_nearest2d", "aten.upsample_bilinear2d")
@_batch_optional("input", 4)
def _upsample(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    out = c.node_val_shape
    sf = a.get("scale_factors")
    if sf is None and a.get("scales_h") is not None:
        sf = [a["scales_h"], a["scales_w"]]
    sf = [float(v) for v in sf] if sf else None
    if c.target == "aten.upsample_nearest2d":
        return c.add("resize_nearest", [x], size=list(out[-2:]), scale_factor=sf)
    return c.add("resize_bilinear", [x], size=list(out[-2:]), scale_factor=sf,
                 align_corners=bool(a.get("align_corners", False)))


@converter("aten.pad", "aten.constant_pad_nd", "aten.reflection_pad1d", "aten.reflection_pad2d",
           "aten.reflection_pad3d", "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d",
           "aten.circular_pad2d")
def _pad(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    rank = c.rank(x)
    pads = [int(p) for p in (a.get("pad") if a.get("pad") is not None else a.get("padding"))]
    mode = a.get("mode", "constant")
    if c.target.startswith("aten.reflection"):
        mode = "reflect"
    elif c.target.startswith("aten.replication"):
        mode = "replicate"
    elif c.target.startswith("aten.circular"):
        mode = "circular"
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise BuildError(f"node {c.name!r}: padding mode {mode!r} is not supported")
    before, after = [0] * rank, [0] * rank
    for i in range(len(pads) // 2):
        before[rank - 1 - i], after[rank - 1 - i] = pads[2 * i], pads[2 * i + 1]
    value = a.get("value")
    return c.add("pad", [x], before=before, after=after, mode=mode, value=float(value or 0.0))


@converter("aten.max_pool2d", "aten.max_pool2d_with_indices")
@_batch_optional("input", 4)
def _max_pool(c: Ctx, a: dict[str, Any]) -> Any:
    k = _pair(a["kernel_size"])
    s = _pair(a.get("stride") or k)
    y = c.add("max_pool2d", [a["input"]], kernel=k, stride=s, padding=_pair(a.get("padding", 0)),
              dilation=_pair(a.get("dilation", 1)), ceil_mode=bool(a.get("ceil_mode", False)))
    return (y, _Unsupported("aten.max_pool2d_with_indices (the indices output)")) if c.target.endswith(
        "with_indices") else y


@converter("aten.avg_pool2d")
@_batch_optional("input", 4)
def _avg_pool(c: Ctx, a: dict[str, Any]) -> Value:
    k = _pair(a["kernel_size"])
    s = _pair(a.get("stride") or k)
    return c.add("avg_pool2d", [a["input"]], kernel=k, stride=s, padding=_pair(a.get("padding", 0)),
                 ceil_mode=bool(a.get("ceil_mode", False)), count_include_pad=bool(a.get("count_include_pad", True)),
                 divisor_override=a.get("divisor_override"))


@converter("aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d")
@_batch_optional("input", 4)
def _adaptive_avg(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    h, w = c.spec(x).shape[-2:]
    oh, ow = _pair(a["output_size"])
    if (oh, ow) == (1, 1):
        return c.add("mean", [x], dims=[c.rank(x) - 2, c.rank(x) - 1], keepdim=True)
    if h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return c.add("avg_pool2d", [x], kernel=k, stride=k)
    return c.add("adaptive_avg_pool2d", [x], output_size=[oh, ow])


# ----------------------------------------------------------------------------------------- views
def _int(s: Any) -> int:
    """int(s), but a batch-proportional size (trtjit.dynamic.SymDim) stays symbolic."""
    from trtjit.dynamic import SymDim
    return s if isinstance(s, SymDim) else int(s)


def _resolve_shape(c: Ctx, x: Value, shape: Sequence[int]) -> list[int]:
    shape = [_int(s) for s in shape]
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = c.spec(x).numel // known if known else 0
    return shape


@converter("aten.view", "aten.reshape", "aten._unsafe_view")
def _reshape(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    return c.add("reshape", [x], shape=_resolve_shape(c, x, a.get("size", a.get("shape"))))


@converter("aten.flatten")
def _flatten(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    shape = list(c.spec(x).shape)
    if not shape:
        return c.add("reshape", [x], shape=[1])
    s, e = _dim(a.get("start_dim", 0), len(shape)), _dim(a.get("end_dim", -1), len(shape))
    return c.add("reshape", [x], shape=shape[:s] + [math.prod(shape[s:e + 1])] + shape[e + 1:])


@converter("aten.unflatten")
def _unflatten(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    shape = list(c.spec(x).shape)
    d = _dim(a["dim"], len(shape))
    sizes = [_int(s) for s in a["sizes"]]
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = shape[d] // known
    return c.add("reshape", [x], shape=shape[:d] + sizes + shape[d + 1:])


@converter("aten.permute")
def _permute(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    return c.add("permute", [x], dims=[_dim(d, c.rank(x)) for d in a["dims"]])


@converter("aten.transpose", "aten.t", "aten.swapaxes")
def _transpose(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    r = c.rank(x)
    if r < 2:
        return c.add("copy", [x])
    d0, d1 = (_dim(a.get("dim0", 0), r), _dim(a.get("dim1", 1), r)) if "dim0" in a else (0, 1)
    if "axis0" in a:
        d0, d1 = _dim(a["axis0"], r), _dim(a["axis1"], r)
    perm = list(range(r))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return c.add("permute", [x], dims=perm)


@converter("aten.expand")
def _expand(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    size = [_int(s) for s in a["size"]]
    cur = list(c.spec(x).shape)
    off = len(size) - len(cur)
    size = [cur[i - off] if s == -1 else s for i, s in enumerate(size)]
    return c.add("expand", [x], shape=size)


@converter("aten.unsqueeze")
def _unsqueeze(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    return c.add("unsqueeze", [x], dim=_dim(a["dim"], c.rank(x) + 1))


@converter("aten.squeeze")
def _squeeze(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    shape = c.spec(x).shape
    dims = a.get("dim", None)
    if dims is None:
        dims = [i for i, s in enumerate(shape) if s == 1]
    elif isinstance(dims, int):
        dims = [dims]
    dims = [_dim(d, len(shape)) for d in dims]
    return c.add("squeeze", [x], dims=sorted(d for d in dims if shape and shape[d] == 1))


@converter("aten.select")
def _select(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    d = _dim(a["dim"], c.rank(x))
    return c.add("select", [x], dim=d, index=int(a["index"]) % c.spec(x).shape[d])


@converter("aten.slice")
def _slice(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    d = _dim(a.get("dim", 0), c.rank(x))
    size = c.spec(x).shape[d]
    start, end, step = a.get("start"), a.get("end"), a.get("step", 1)
    start, end, _ = slice(start, end, step).indices(size)
    return c.add("slice", [x], dim=d, start=start, end=max(end, start), step=int(step))


@converter("aten.narrow")
def _narrow(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    d = _dim(a["dim"], c.rank(x))
    start = int(a["start"]) % c.spec(x).shape[d] if int(a["start"]) < 0 else int(a["start"])
    return c.add("slice", [x], dim=d, start=start, end=start + int(a["length"]), step=1)


@converter("aten.embedding")
def _embedding(c: Ctx, a: dict[str, Any]) -> Value:
    if a.get("max_norm") is not None:
        raise BuildError(f"node {c.name!r}: embedding with max_norm renormalizes weights; not supported")
    return c.add("embedding", [a["weight"], a["indices"]])


@converter("aten.index_select")
def _index_select(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    return c.add("index_select", [x, a["index"]], dim=_dim(a["dim"], c.rank(x)))


@converter("aten.index")
def _index(c: Ctx, a: dict[str, Any]) -> Value:
    """``x[..., idx, ...]`` with one index tensor (``embed_positions[position_ids]``): an index_select."""
    x, idx = a["input"], list(a["indices"])
    given = [i for i, t in enumerate(idx) if t is not None]
    if len(given) != 1 or c.spec(idx[given[0]]).dtype == torch.bool:
        raise BuildError(f"node {c.name!r}: indexing with {len(given)} index tensors (or a boolean mask) is not "
                         "supported; one integer index tensor is")
    d, t = given[0], idx[given[0]]
    shape = list(c.spec(x).shape)
    flat = c.add("reshape", [t], shape=[c.spec(t).numel])
    rows = c.add("index_select", [x, flat], dim=d)
    return c.add("reshape", [rows], shape=shape[:d] + list(c.spec(t).shape) + shape[d + 1:])


@converter("aten.repeat_interleave")
def _repeat_interleave(c: Ctx, a: dict[str, Any]) -> Value:
    x, reps = a["input"], a.get("repeats")
    if not isinstance(reps, int) or a.get("dim") is None:
        raise BuildError(f"node {c.name!r}: repeat_interleave needs an integer repeat count and a dim")
    d = _dim(a["dim"], c.rank(x))
    shape = list(c.spec(x).shape)
    u = c.add("unsqueeze", [x], dim=d + 1)
    e = c.add("expand", [u], shape=shape[:d + 1] + [reps] + shape[d + 1:])
    return c.add("reshape", [e], shape=shape[:d] + [shape[d] * reps] + shape[d + 1:])


@converter("aten.gather")
def _gather(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    if a.get("sparse_grad"):
        raise BuildError(f"node {c.name!r}: gather with sparse_grad")
    return c.add("gather", [x, a["index"]], dim=_dim(a["dim"], c.rank(x)))


@converter("aten.cat", "aten.concat", "aten.concatenate")
def _cat(c: Ctx, a: dict[str, Any]) -> Value:
    xs = [x for x in a["tensors"] if c.spec(x).numel > 0 or len(c.spec(x).shape) > 1]
    if len(xs) == 1:
        return c.add("copy", xs)
    return c.add("cat", xs, dim=_dim(a.get("dim", 0), c.rank(xs[0])))


@converter("aten.stack")
def _stack(c: Ctx, a: dict[str, Any]) -> Value:
    xs = a["tensors"]
    d = _dim(a.get("dim", 0), c.rank(xs[0]) + 1)
    ys = [c.add("unsqueeze", [x], dim=d) for x in xs]
    return c.add("cat", ys, dim=d) if len(ys) > 1 else ys[0]


@converter("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind", "aten.tensor_split")
def _split(c: Ctx, a: dict[str, Any]) -> tuple:
    x = a["input"]
    rank = c.rank(x)
    d = _dim(a.get("dim", 0), rank)
    size = c.spec(x).shape[d]
    if c.target == "aten.unbind":
        return tuple(c.add("select", [x], dim=d, index=i) for i in range(size))
    if c.target == "aten.chunk":
        step = -(-size // int(a["chunks"]))
        sizes = [min(step, size - s) for s in range(0, size, step)]
    elif c.target == "aten.tensor_split":
        raise BuildError(f"node {c.name!r}: tensor_split is not supported yet")
    else:
        ss = a.get("split_size", a.get("split_sizes", a.get("split_size_or_sections")))
        sizes = list(ss) if isinstance(ss, (list, tuple)) else [min(ss, size - s) for s in range(0, size, ss)]
    outs, start = [], 0
    for n in sizes:
        outs.append(c.add("slice", [x], dim=d, start=start, end=start + n, step=1))
        start += n
    return tuple(outs)


@converter("aten.detach_", "aten.lift_fresh")
def _inplace_noop(c: Ctx, a: dict[str, Any]) -> Value:
    return a["input"]


# ------------------------------------------------------------------------------------------ import
_SKIP = {"aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size",
         "aten._assert_async", "aten.sym_size"}


def _plugin_converter(name: str) -> None:
    """A custom (non-aten) op that a registered plugin serves gets a converter (trtjit.plugins)."""
    if name.startswith("aten.") or name == "getitem":
        return
    from trtjit.plugins import torch_converter

    conv = torch_converter(name)
    if conv is not None:
        CONVERTERS[name] = conv


def _target_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._schema.name.split('::')[-1]}" if target.namespace == "aten" else str(target)
    if isinstance(target, torch._ops.OpOverloadPacket):
        return str(target)
    return getattr(target, "__name__", str(target))


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def export_program(module: torch.nn.Module, args: tuple, dynamic_shapes: Any = None) -> torch.export.ExportedProgram:
    try:
        if dynamic_shapes is not None:
            return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
        return torch.export.export(module, args, strict=False)
    except TrtjitError:
        raise
    except Exception as e:
        raise BuildError(f"torch.export could not capture {type(module).__name__}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from e


def import_module(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  dynamic: Any = None) -> Graph:
    """Export ``module`` with ``example_inputs`` and convert it to a trtjit graph. ``dynamic``: a
    ``trtjit.dynamic.DynamicInputs`` (inputs with a batch range) or None for static shapes."""
    if dynamic is None:
        return import_exported(export_program(module, example_inputs))
    ep = export_program(module, dynamic.export_args(example_inputs), dynamic.export_dynamic_shapes())
    return import_exported(ep, batch=dynamic.range)


def _size(s: Any, batch: Any, where: str) -> int:
    """A size torch.export recorded: an int, or (dynamic batch) a SymInt ``coef * s0`` -> SymDim."""
    if not isinstance(s, torch.SymInt):
        return int(s)
    expr = s.node.expr
    if expr.is_number:
        return int(expr)
    coef, rest = expr.as_coeff_Mul()
    if batch is not None and rest.is_Symbol and coef.is_integer:
        from trtjit.dynamic import sym
        return sym(int(coef), batch)
    raise BuildError(f"{where}: size {expr} is not proportional to the dynamic batch; trtjit's dynamic shapes "
                     "support sizes coef * batch only")


def _batch_constant(g: Graph, node: torch.fx.Node, env: dict[str, Any], batch: Any, name: str, path: str) -> Value:
    """A constant-producing op (arange, full, zeros) of a dynamic-batch export, whose sizes may follow the
    batch (``arange(B)``): evaluated once at a size covering the range and the shape-inference probes, then
    sliced to the runtime batch along those dims. Checked at min, opt and max: the result at a batch must be
    the leading part of the large one (true of arange, full, zeros; not of linspace), else BuildError."""
    from trtjit.dynamic import _PROBES, SymDim, at

    def call(b: int) -> torch.Tensor:
        a, kw = pytree.tree_map_only(torch.fx.Node, lambda n: at(env.get(n.name), b), (node.args, node.kwargs))
        return node.target(*a, **kw).cpu()

    spec = _spec_of(node.meta["val"], batch, f"node {name!r}")
    dims = [(d, s) for d, s in enumerate(spec.shape) if isinstance(s, SymDim)]
    big_b = max(batch.max, *_PROBES) + 1  # larger than any batch: slicing it is never an identity
    big = call(big_b)
    for b in dict.fromkeys((batch.min, batch.opt, batch.max)):
        part = big[tuple(slice(0, s.at(b)) if (d, s) in dims else slice(None) for d, s in enumerate(spec.shape))]
        small = call(b)
        if part.shape != small.shape or not torch.equal(part, small):
            raise BuildError(f"node {name!r} ({_target_name(node.target)}): a constant computed from the dynamic "
                             f"batch (at batch {b} it is not the leading part of its value at batch {big_b}); not "
                             "supported in a dynamic-batch engine")
    v = g.add_constant(name, big, source=path)
    for d, s in dims:
        v = Value(g.add("slice", [v], {"dim": d, "start": 0, "end": s, "step": 1}, name=f"{name}.batch",
                        source=path).name)
    return v


def _spec_of(t: torch.Tensor, batch: Any, where: str) -> TensorSpec:
    return TensorSpec(tuple(_size(s, batch, where) for s in t.shape), t.dtype) if batch is not None \
        else TensorSpec.of(t)


_VALUE_PRESERVING_INPLACE = {"aten::detach_"}  # in-place in autograd metadata only


def _functionalize(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """In-place ops (relu_, add_ in torchvision models) become their functional forms; nothing else is
    decomposed (an empty decomposition table). That re-traces the program (2-3 s for gpt2), so in-place ops
    that change no values (``detach_``: HF GPT-2 has 24) do not trigger it; their converters pass the input."""
    mutable = any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
                  and n.target._schema.name not in _VALUE_PRESERVING_INPLACE
                  for n in ep.graph.nodes if n.op == "call_function")
    return ep.run_decompositions({}) if mutable else ep


def import_exported(ep: torch.export.ExportedProgram, batch: Any = None) -> Graph:
    ep = _functionalize(ep)
    g = Graph()
    sig = ep.graph_signature
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    state = {**ep.state_dict, **ep.constants}
    env: dict[str, Any] = {}
    ctx = Ctx(g)
    ctx.batch = batch
    unsupported: dict[str, list[str]] = {}
    used_paths: set[str] = set()

    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in params:
                env[node.name] = g.add_constant(params[node.name], state[params[node.name]].detach().cpu(),
                                                source=params[node.name])
            else:
                val = node.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise InputError(f"model input {node.name!r} is not a tensor ({type(val).__name__}); "
                                     "trtjit engines take tensor inputs only")
                env[node.name] = g.add_input(node.name, _spec_of(val, batch, f"input {node.name!r}"))
        elif node.op == "call_function":
            name = _target_name(node.target)
            if batch is not None and isinstance(node.meta.get("val"), torch.SymInt):  # a size (sym_size, 5 * s0)
                env[node.name] = _size(node.meta["val"], batch, f"node {node.name!r}")
                continue
            if name in _SKIP:
                continue
            if name not in CONVERTERS:
                _plugin_converter(name)
            path = _module_path(node)
            args = pytree.tree_map_only(torch.fx.Node, lambda n: env.get(n.name), (node.args, node.kwargs))
            if name == "getitem":  # one output of a multi-output op (unused ones stay _Unsupported)
                src = args[0][0]
                env[node.name] = src if isinstance(src, _Unsupported) else src[args[0][1]]
                continue
            leaves = pytree.tree_leaves(args, is_leaf=lambda x: isinstance(x, Value))
            if any(isinstance(x, _Unsupported) for x in leaves):
                env[node.name] = _Unsupported()
                if name not in CONVERTERS:
                    unsupported.setdefault(name, []).append(path or node.name)
                for x in leaves:
                    if isinstance(x, _Unsupported) and x.what:
                        unsupported.setdefault(x.what, []).append(path or node.name)
                continue
            tensor_args = [x for x in leaves if isinstance(x, Value)]
            if not tensor_args and isinstance(node.target, torch._ops.OpOverload) and name not in CONVERTERS:
                val = node.meta.get("val")
                if isinstance(val, torch.Tensor):  # a constant-producing op (full, arange, zeros): evaluate now
                    if batch is not None:
                        env[node.name] = _batch_constant(g, node, env, batch, f"{path or node.name}:{node.name}", path)
                        continue
                    real = node.target(*node.args, **node.kwargs)
                    env[node.name] = g.add_constant(f"{path or node.name}:{node.name}", real.cpu(), source=path)
                    continue
            if name not in CONVERTERS:
                unsupported.setdefault(name, []).append(path or node.name)
                env[node.name] = _Unsupported()
                continue
            if unsupported:  # keep scanning for unsupported ops, but do not build more
                env[node.name] = _Unsupported()
                continue
            ctx.name = g.unique_name(path if path and path not in used_paths else
                                     (f"{path}:{node.name}" if path else node.name))
            used_paths.add(path)
            ctx.source, ctx.target = path or node.name, name
            val = node.meta.get("val")
            try:
                ctx.node_val_shape = _spec_of(val, batch, ctx.name).shape if isinstance(val, torch.Tensor) else ()
            except GuardOnDataDependentSymNode:
                raise BuildError(f"node {ctx.name!r} ({name}): its output shape depends on the input values "
                                 "(boolean-mask indexing, nonzero, ...); trtjit engines have static shapes") from None
            a = _normalize(node, args)
            try:
                out = CONVERTERS[name](ctx, a)
            except GuardError as e:  # a batch-dependent decision: name the node
                raise GuardError(f"node {ctx.name!r} ({name}): {e}") from None
            _check_spec(ctx, node, out)
            env[node.name] = out
        elif node.op == "output":
            if unsupported:
                raise UnsupportedOpError(unsupported)
            outs = []
            for o in pytree.tree_leaves(node.args[0]):
                v = env.get(o.name) if isinstance(o, torch.fx.Node) else None
                if isinstance(v, _Unsupported) and v.what:
                    raise UnsupportedOpError({v.what: [f"model output {o.name}"]})
                if not isinstance(v, Value):
                    raise InputError(f"model output {o} is not a tensor; trtjit engines return tensors only")
                outs.append(v)
            g.outputs = outs
    g.meta["out_spec"] = pytree.treespec_dumps(ep.call_spec.out_spec) if ep.call_spec.out_spec else None
    g.meta["input_names"] = list(g.inputs)
    return g


def _normalize(node: torch.fx.Node, args: tuple) -> dict[str, Any]:
    a, kw = args
    if isinstance(node.target, torch._ops.OpOverload):
        pair = normalize_function(node.target, tuple(a), dict(kw), normalize_to_only_use_kwargs=True)
        if pair is not None:
            return dict(pair.kwargs)
        schema = node.target._schema
        out = {arg.name if arg.name != "self" else "input": arg.default_value
               for arg in schema.arguments if arg.has_default_value()}
        for arg, v in zip(schema.arguments, a):
            out[arg.name if arg.name != "self" else "input"] = v
        out.update(kw)
        return out
    return {"input": a[0], **kw}


def _check_spec(ctx: Ctx, node: torch.fx.Node, out: Any) -> None:
    """The converter's result must have exactly the shape and dtype torch.export recorded."""
    vals = node.meta.get("val")
    outs = out if isinstance(out, tuple) else (out,)
    vals = vals if isinstance(vals, (tuple, list)) else (vals,)
    for o, v in zip(outs, vals):
        if isinstance(o, Value) and isinstance(v, torch.Tensor):
            got, want = ctx.spec(o), _spec_of(v, ctx.batch, ctx.name)
            if got != want:
                raise BuildError(f"node {ctx.name!r} ({ctx.target}): converted to {got} but torch records "
                                 f"{want}; this is a trtjit converter bug")

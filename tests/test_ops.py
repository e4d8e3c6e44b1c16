"""Numerics of every op in the op table against its torch reference.

Each case builds a tiny IR graph by hand, compiles it at opt_level 0 (every op its own kernel) and 2
(folding and fusion), runs the engine on fresh random CPU inputs (Triton's interpreter) and compares with
the op's reference ``get_op(op).run``. The case table is keyed by op name; ``test_every_op_has_a_recipe``
and the parametrization over ``OPS`` make a new op without a recipe fail.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import DEVICE

import trtjit
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.ops import OPS, get_op

SKIP_KINDS = ("source", "fused")
TESTED_OPS = [name for name, opdef in OPS.items() if opdef.kind not in SKIP_KINDS]
F32, F16 = torch.float32, torch.float16

POW_BUG = ("pow_scalar with an integer exponent outside [-4, 4] lowers to exp2(p * log2(x)), which is NaN for "
           "negative bases where torch gives a finite x**p")
NEG_DIM_BUG = ("cat/gather/index_select accept a negative `dim` (shape inference, reference and verify() all pass) "
               "but their kernel templates index with it literally (`i-1`): NameError, or wrong values for gather")


# ------------------------------------------------------------------------------------------- helpers
def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4, what: str = "") -> None:
    """``max|a - b| / max|b|`` below ``tol`` for floating tensors (same shape and dtype); exact otherwise."""
    where = f"{what}: " if what else ""
    assert isinstance(actual, torch.Tensor), f"{where}expected a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{where}shape {list(actual.shape)} != {list(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{where}dtype {actual.dtype} != {expected.dtype}"
    if not expected.dtype.is_floating_point:
        mismatch = (actual != expected).sum().item()
        assert mismatch == 0, f"{where}{mismatch} of {expected.numel()} elements differ:\n{actual}\n{expected}"
        return
    a, b = actual.double(), expected.double()
    same_nan = bool(torch.equal(torch.isnan(a), torch.isnan(b)))
    assert same_nan, f"{where}NaN pattern differs:\n{actual}\n{expected}"
    inf_b = torch.isinf(b)
    same_inf = bool(torch.equal(a[inf_b], b[inf_b])) and not bool(torch.isinf(a[~inf_b]).any())
    assert same_inf, f"{where}inf pattern differs:\n{actual}\n{expected}"
    finite = torch.isfinite(b)
    if not finite.any():
        return
    scale = b[finite].abs().max().item()
    err = (a[finite] - b[finite]).abs().max().item()
    rel = err / scale if scale > 0 else err
    assert rel < tol, f"{where}relative error {rel:.3e} >= {tol:.0e} (max abs err {err:.3e}, max |ref| {scale:.3e})"


@dataclass(frozen=True)
class In:
    """How to draw one graph input: shape, dtype and a value recipe (never zeros)."""

    shape: tuple[int, ...]
    kind: str = "randn"  # randn | pos | nonzero | wide | int | bool | mask | index
    dtype: torch.dtype | None = None  # default: bool for bool/mask, int64 for index, else float32
    high: int = 0  # index: values drawn from [0, high)

    @property
    def dt(self) -> torch.dtype:
        default = {"bool": torch.bool, "mask": torch.bool, "index": torch.int64, "int8": torch.int8}.get(self.kind, F32)
        return self.dtype or default


def draw(spec: In, gen: torch.Generator) -> torch.Tensor:
    shape = spec.shape
    if spec.kind == "bool":
        return torch.rand(shape, generator=gen) < 0.5
    if spec.kind == "mask":  # a boolean attention mask with at least one True per row
        m = torch.rand(shape, generator=gen) < 0.5
        m[..., 0] = True
        return m
    if spec.kind == "index":
        return torch.randint(0, spec.high, shape, generator=gen).to(spec.dt)
    if spec.kind == "int8":  # the full int8 range (int8 GEMM/conv operands)
        return torch.randint(-128, 128, shape, generator=gen).to(torch.int8)
    if spec.kind == "int":  # small positive integers, so that eq/ne/le/ge see ties
        return torch.randint(1, 4, shape, generator=gen).to(spec.dt)
    if spec.kind == "randn":
        t = torch.randn(shape, generator=gen)
    elif spec.kind == "pos":
        t = torch.rand(shape, generator=gen) * 1.5 + 0.5
    elif spec.kind == "nonzero":
        t = (torch.rand(shape, generator=gen) * 1.5 + 0.5) * torch.where(torch.rand(shape, generator=gen) < 0.5,
                                                                           -1.0, 1.0)
    elif spec.kind == "wide":
        t = torch.randn(shape, generator=gen) * 4.0 + 0.25
    else:
        raise AssertionError(f"unknown input kind {spec.kind!r}")
    return t.to(spec.dt)


Build = Callable[[Graph, list[Value]], list[Value]]


@dataclass
class Case:
    """One graph to test: a single op with ``attrs`` or, with ``build``, a small multi-node graph."""

    id: str
    ins: list[In]
    attrs: dict[str, Any] = field(default_factory=dict)
    build: Build | None = None
    tol: float = 1e-4
    xfail: dict[int, str] = field(default_factory=dict)  # opt_level -> reason (a trtjit bug)


def make_graph(op: str, case: Case) -> tuple[Graph, dict[str, Any]]:
    """A fresh graph for ``case`` and the normalized attributes of its single op node."""
    g = Graph()
    vals = [g.add_input(f"x{i}", TensorSpec(s.shape, s.dt)) for i, s in enumerate(case.ins)]
    if case.build is not None:
        g.outputs = case.build(g, vals)
        return g, {}
    n = g.add(op, vals, case.attrs, name=op)
    g.outputs = [Value(n.name, i) for i in range(len(n.outputs))]
    return g, dict(n.attrs)


def reference(op: str, case: Case, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    g, attrs = make_graph(op, case)
    if case.build is not None:  # several nodes: compose the op references in graph order
        return trtjit.run_graph(g, xs)
    return get_op(op).run(xs, attrs)


def seeded(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def check_case(op: str, case: Case, opt_level: int) -> trtjit.Engine:
    gen = seeded(f"{op}/{case.id}")
    xs = [draw(s, gen) for s in case.ins]
    saved = [x.clone() for x in xs]
    expected = reference(op, case, xs)
    g, _ = make_graph(op, case)
    engine = trtjit.build(g, trtjit.BuildOptions(opt_level=opt_level, verify=True))
    dev = [x.to(DEVICE) for x in xs]
    outs = engine.run(*dev)
    for x, s in zip(dev, saved):
        assert torch.equal(x.cpu(), s), "the engine modified an input"
    assert len(outs) == len(expected)
    for i, (a, b) in enumerate(zip(outs, expected)):
        assert_close_rel(a.cpu(), b, case.tol, what=f"{op}[{case.id}] O{opt_level} output {i}")
    return engine


# --------------------------------------------------------------------------------------- case table
def _unary(*cases: tuple[str, str, dict]) -> list[Case]:
    return [Case(cid, [In((4, 6), kind)], attrs) for cid, kind, attrs in cases]


def _binary(kind: str = "randn", kind_b: str | None = None) -> list[Case]:
    kb = kind_b or kind
    return [Case("same", [In((4, 6), kind), In((4, 6), kb)]),
            Case("bcast_row", [In((2, 4, 6), kind), In((6,), kb)]),
            Case("bcast_both", [In((4, 1), kind), In((1, 6), kb)])]


def _view_cases(op: str, shape: tuple[int, ...], attrs: dict, tag: str = "") -> list[Case]:
    """The view alone as a graph output, feeding a unary op, and feeding a binary op with a fresh input."""
    out = get_op(op).infer([TensorSpec(shape, F32)], get_op(op).normalize_attrs(attrs))[0].shape
    tag = f"{tag}_" if tag else ""

    def then_exp(g: Graph, v: list[Value]) -> list[Value]:
        x = Value(g.add(op, [v[0]], attrs).name)
        return [Value(g.add("exp", [x]).name)]

    def then_mul(g: Graph, v: list[Value]) -> list[Value]:
        x = Value(g.add(op, [v[0]], attrs).name)
        return [Value(g.add("mul", [x, v[1]]).name)]

    return [Case(f"{tag}output", [In(shape)], attrs),
            Case(f"{tag}into_exp", [In(shape)], build=then_exp),
            Case(f"{tag}into_mul", [In(shape), In(out)], build=then_mul)]


def _chain(*steps: tuple[str, dict]) -> Build:
    """x0 -> op1 -> op2 -> ...; a step may name ``"@1"`` etc. to take graph input 1 as second operand."""
    def build(g: Graph, v: list[Value]) -> list[Value]:
        x = v[0]
        for op, attrs in steps:
            a = dict(attrs)
            extra = [v[int(a.pop("@")[1:])]] if "@" in a else []
            x = Value(g.add(op, [x, *extra], a).name)
        return [x]
    return build


def _example_plugin(g: Graph, v: list[Value]) -> list[Value]:
    from trtjit.plugins import add_plugin_node
    from trtjit.plugins_examples import GroupNormSiLUPlugin

    return add_plugin_node(g, GroupNormSiLUPlugin, v, {"num_groups": 2})


def _reductions() -> list[Case]:
    shape = (3, 4, 5)
    return [Case(f"dims{''.join(map(str, dims))}_{'keep' if keep else 'drop'}", [In(shape)],
                 {"dims": dims, "keepdim": keep})
            for dims, keep in [([2], False), ([2], True), ([1], False), ([1], True), ([0], False),
                               ([0, 2], True), ([0, 2], False), ([1, 2], False), ([0, 1, 2], False)]]


CASES: dict[str, list[Case]] = {
    # ---- unary pointwise
    "neg": _unary(("randn", "randn", {})),
    "abs": _unary(("randn", "randn", {})),
    "exp": _unary(("randn", "randn", {})),
    "log": _unary(("pos", "pos", {})),
    "sqrt": _unary(("pos", "pos", {})),
    "rsqrt": _unary(("pos", "pos", {})),
    "reciprocal": _unary(("nonzero", "nonzero", {})),
    "sin": _unary(("wide", "wide", {})),
    "cos": _unary(("wide", "wide", {})),
    "erf": _unary(("randn", "randn", {})),
    "floor": _unary(("wide", "wide", {}))
    + [Case("int32", [In((4, 6), "int", torch.int32)])],
    "ceil": _unary(("wide", "wide", {}))
    + [Case("int32", [In((4, 6), "int", torch.int32)])],
    "tanh": _unary(("wide", "wide", {})),
    "sigmoid": _unary(("wide", "wide", {})),
    "relu": _unary(("randn", "randn", {})),
    "silu": _unary(("wide", "wide", {})),
    "gelu": _unary(("none", "wide", {}), ("tanh", "wide", {"approximate": "tanh"})),
    "leaky_relu": _unary(("default", "randn", {}), ("slope0.2", "randn", {"negative_slope": 0.2})),
    "elu": _unary(("default", "randn", {}), ("alpha0.5", "randn", {"alpha": 0.5})),
    "hardswish": _unary(("wide", "wide", {})),
    "hardsigmoid": _unary(("wide", "wide", {})),
    "clamp": _unary(("min_only", "randn", {"min": -0.25}), ("max_only", "randn", {"max": 0.5}),
                    ("both", "randn", {"min": -0.5, "max": 0.75}), ("int_bounds", "wide", {"min": -1, "max": 2})),
    "pow_scalar": _unary(("sq", "randn", {"exponent": 2}), ("cube_neg_base", "randn", {"exponent": 3}),
                         ("zero", "randn", {"exponent": 0}), ("half", "pos", {"exponent": 0.5}),
                         ("minus_half", "pos", {"exponent": -0.5}), ("minus_two", "nonzero", {"exponent": -2}),
                         ("frac", "pos", {"exponent": 1.7}), ("float_two", "randn", {"exponent": 2.0}),
                         ("big_int_pos_base", "pos", {"exponent": 5}))
    + [Case("big_int_neg_base", [In((4, 6))], {"exponent": 5}),
       Case("big_even_neg_base", [In((4, 6))], {"exponent": 6})],
    "logical_not": [Case("bool", [In((4, 6), "bool")]), Case("float", [In((4, 6), "int")])],
    "cast": [Case("to_f16", [In((4, 6), "wide")], {"dtype": "float16"}),
             Case("to_i32", [In((4, 6), "wide")], {"dtype": "int32"}),
             Case("to_bool", [In((4, 6), "randn")], {"dtype": "bool"}),
             Case("i32_to_f32", [In((4, 6), "int", torch.int32)], {"dtype": "float32"}),
             Case("bool_to_f32", [In((4, 6), "bool")], {"dtype": "float32"}),
             Case("f16_to_f32", [In((4, 6), "randn", F16)], {"dtype": "float32"})],
    "bitcast": [Case("f32_to_i32", [In((4, 6), "randn")], {"dtype": "int32"}),
                Case("f16_to_i16", [In((4, 6), "randn", F16)], {"dtype": "int16"}),
                Case("i32_to_u32", [In((4, 6), "int", torch.int32)], {"dtype": "uint32"})],
    "copy": _unary(("randn", "randn", {})),
    # ---- binary pointwise
    "add": _binary() + [Case("f32_plus_i32", [In((4, 6)), In((4, 6), "int", torch.int32)])],
    "sub": _binary(),
    "mul": _binary(),
    "div": _binary("randn", "nonzero"),
    "maximum": _binary(),
    "minimum": _binary(),
    "pow": _binary("pos", "randn"),
    "eq": _binary("int"),
    "ne": _binary("int"),
    "lt": _binary("int"),
    "le": _binary("int"),
    "gt": _binary("int"),
    "ge": _binary("int"),
    "logical_and": _binary("bool"),
    "logical_or": _binary("bool"),
    "where": [Case("same", [In((4, 6), "bool"), In((4, 6)), In((4, 6))]),
              Case("bcast", [In((4, 1), "bool"), In((4, 6)), In((6,))]),
              Case("bcast_cond", [In((6,), "bool"), In((3, 4, 6)), In((4, 6))])],
    # ---- integer bitwise ops (ONNX Bitwise*/BitShift)
    **{op: [Case("i32", [In((4, 6), "int", torch.int32), In((4, 6), "int", torch.int32)]),
            Case("u8_bcast", [In((4, 6), "int", torch.uint8), In((6,), "int", torch.uint8)])]
       for op in ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift")},
    "bitwise_not": [Case("i32", [In((4, 6), "int", torch.int32)]), Case("u8", [In((4, 6), "int", torch.uint8)])],
    "atan": _unary(("wide", "wide", {})) + [Case("f64", [In((4, 6), "wide", torch.float64)])],
    # ---- plugins (trtjit.plugins; the example GroupNorm-SiLU plugin of trtjit.plugins_examples)
    "plugin": [Case("group_norm_silu", [In((2, 4, 3, 3)), In((4,)), In((4,))], build=lambda g, v: _example_plugin(g, v))],
    # ---- reductions
    "sum": _reductions(),
    "mean": _reductions(),
    "amax": _reductions(),
    "amin": _reductions(),
    # ---- views
    "reshape": _view_cases("reshape", (2, 3, 4), {"shape": [6, 4]})
    + _view_cases("reshape", (2, 3, 4), {"shape": [4, -1, 2]}, "infer")
    + [Case("of_permute_copies", [In((2, 3, 4))], build=_chain(("permute", {"dims": [0, 2, 1]}),
                                                                 ("reshape", {"shape": [8, 3]}),
                                                                 ("exp", {})))],
    "permute": _view_cases("permute", (2, 3, 4), {"dims": [2, 0, 1]})
    + [Case("of_permute", [In((2, 3, 4))], build=_chain(("permute", {"dims": [1, 0, 2]}),
                                                         ("permute", {"dims": [2, 1, 0]}), ("neg", {})))],
    "expand": _view_cases("expand", (3, 1), {"shape": [3, 5]})
    + _view_cases("expand", (1, 4), {"shape": [2, 3, 4]}, "new_dims"),
    "slice": _view_cases("slice", (3, 8), {"dim": 1, "start": 1, "end": 7, "step": 2})
    + _view_cases("slice", (6, 4), {"dim": 0, "start": 2}, "dim0_open")
    + _view_cases("slice", (2, 9, 3), {"dim": 1, "start": 0, "end": None, "step": 3}, "mid_step3"),
    "select": _view_cases("select", (3, 4, 5), {"dim": 1, "index": 2})
    + _view_cases("select", (3, 4, 5), {"dim": 2, "index": -1}, "neg_index"),
    "squeeze": _view_cases("squeeze", (3, 1, 4, 1), {"dims": [1, 3]})
    + _view_cases("squeeze", (3, 1, 4), {"dims": [1]}, "one"),
    "unsqueeze": _view_cases("unsqueeze", (3, 4), {"dim": 1})
    + _view_cases("unsqueeze", (3, 4), {"dim": 0}, "front"),
    # ---- gemm
    "matmul": [
        Case("2d", [In((5, 7)), In((7, 6))]),
        Case("k_loop", [In((3, 40)), In((40, 5))]),
        Case("big_m", [In((70, 8)), In((8, 5))]),
        Case("3d_x_2d", [In((2, 3, 4)), In((4, 5))]),
        Case("2d_x_3d", [In((3, 4)), In((2, 4, 5))]),
        Case("3d_x_3d", [In((2, 3, 4)), In((2, 4, 5))]),
        Case("4d_x_4d", [In((2, 3, 4, 5)), In((2, 3, 5, 6))]),
        Case("4d_bcast", [In((2, 1, 4, 5)), In((1, 3, 5, 6))]),
        Case("4d_x_2d", [In((2, 3, 4, 5)), In((5, 6))]),
        Case("b_transposed", [In((4, 5)), In((6, 5))],
             build=lambda g, v: [Value(g.add("matmul", [v[0], Value(g.add("permute", [v[1]],
                                                                          {"dims": [1, 0]}).name)]).name)]),
        Case("a_transposed_batched", [In((2, 5, 4)), In((2, 5, 6))],
             build=lambda g, v: [Value(g.add("matmul", [Value(g.add("permute", [v[0]], {"dims": [0, 2, 1]}).name),
                                                        v[1]]).name)]),
        Case("epilogue", [In((3, 4, 5)), In((5, 6)), In((6,))],
             build=lambda g, v: [Value(g.add("relu", [Value(g.add("add", [Value(g.add("matmul", v[:2]).name),
                                                                         v[2]]).name)]).name)]),
    ],
    "conv2d": [
        Case("basic", [In((2, 4, 7, 7)), In((6, 4, 3, 3))]),
        Case("stride2_pad1", [In((2, 4, 7, 7)), In((6, 4, 3, 3))], {"stride": [2, 2], "padding": [1, 1]}),
        Case("dilation2", [In((1, 3, 9, 9)), In((4, 3, 3, 3))], {"dilation": [2, 2], "padding": [2, 2]}),
        Case("groups2", [In((2, 4, 6, 6)), In((6, 2, 3, 3))], {"groups": 2, "padding": [1, 1]}),
        Case("depthwise", [In((2, 4, 6, 6)), In((4, 1, 3, 3))], {"groups": 4, "padding": [1, 1]}),
        Case("depthwise_mult2", [In((1, 3, 6, 6)), In((6, 1, 3, 3))], {"groups": 3, "stride": [2, 2]}),
        Case("rect", [In((1, 3, 6, 8)), In((5, 3, 1, 3))], {"stride": [2, 1], "padding": [0, 1]}),
        Case("pointwise_1x1", [In((2, 5, 4, 4)), In((3, 5, 1, 1))]),
        Case("bias_relu", [In((1, 3, 6, 6)), In((4, 3, 3, 3)), In((1, 4, 1, 1))],
             build=lambda g, v: [Value(g.add("relu", [Value(g.add("add", [Value(g.add("conv2d", v[:2]).name),
                                                                         v[2]]).name)]).name)]),
    ],
    "conv_transpose2d": [
        Case("basic", [In((2, 4, 5, 5)), In((4, 6, 3, 3))]),
        Case("stride2_pad1_outpad1", [In((2, 4, 5, 5)), In((4, 6, 3, 3))],
             {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}),
        Case("groups2_dilation2", [In((1, 4, 4, 4)), In((4, 3, 3, 3))], {"groups": 2, "dilation": [2, 2]}),
        Case("rect_stride3", [In((1, 3, 4, 5)), In((3, 2, 2, 3))], {"stride": [3, 2], "padding": [1, 0]}),
    ],
    # ---- pooling
    "max_pool2d": [
        Case("k3s2", [In((2, 3, 7, 7))], {"kernel": [3, 3], "stride": [2, 2]}),
        Case("pad1", [In((2, 3, 7, 7))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}),
        Case("ceil", [In((1, 2, 7, 7))], {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
        Case("ceil_pad", [In((1, 2, 8, 8))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                              "ceil_mode": True}),
        Case("dilation2", [In((1, 2, 9, 9))], {"kernel": [3, 3], "stride": [1, 1], "dilation": [2, 2]}),
        Case("rect", [In((1, 2, 6, 9))], {"kernel": [2, 3], "stride": [1, 2], "padding": [1, 1]}),
    ],
    "pad": [
        Case("constant_crop", [In((2, 3, 5, 6))], {"before": [0, 0, 2, -1], "after": [0, 1, 0, 3], "value": 0.5}),
        Case("reflect", [In((2, 3, 5, 6))], {"before": [0, 0, 2, 1], "after": [0, 0, 1, 3], "mode": "reflect"}),
        Case("replicate", [In((2, 3, 5, 6))], {"before": [0, 0, 2, 1], "after": [0, 0, 1, 3], "mode": "replicate"}),
        Case("circular", [In((2, 3, 5, 6))], {"before": [0, 0, 2, 1], "after": [0, 0, 1, 3], "mode": "circular"}),
    ],
    "adaptive_avg_pool2d": [
        Case("uneven", [In((2, 3, 7, 10))], {"output_size": [3, 4]}),
        Case("grow", [In((1, 2, 3, 5))], {"output_size": [5, 7]}),
    ],
    "resize_nearest": [
        Case("x2", [In((2, 3, 4, 5))], {"size": [8, 10], "scale_factor": [2.0, 2.0]}),
        Case("to_size", [In((1, 2, 5, 7))], {"size": [8, 3]}),
    ],
    "resize_bilinear": [
        Case("x1_5", [In((2, 3, 4, 6))], {"size": [6, 9], "scale_factor": [1.5, 1.5]}),
        Case("to_size", [In((1, 2, 5, 7))], {"size": [11, 4]}),
        Case("align_corners", [In((1, 2, 5, 7))], {"size": [3, 9], "align_corners": True}),
    ],
    "avg_pool2d": [
        Case("k2s2", [In((2, 3, 6, 6))], {"kernel": [2, 2], "stride": [2, 2]}),
        Case("pad_incl", [In((1, 2, 7, 7))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}),
        Case("pad_excl", [In((1, 2, 7, 7))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                              "count_include_pad": False}),
        Case("ceil", [In((1, 2, 7, 7))], {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
        Case("ceil_pad_incl", [In((1, 2, 8, 8))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                                   "ceil_mode": True}),
        Case("ceil_pad_excl", [In((1, 2, 8, 8))], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                                   "ceil_mode": True, "count_include_pad": False}),
        Case("divisor", [In((1, 2, 6, 6))], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
                                             "divisor_override": 5}),
    ],
    # ---- gather, cat
    "index_select": [
        Case("dim0", [In((5, 4)), In((3,), "index", high=5)], {"dim": 0}),
        Case("dim1_repeats", [In((3, 6)), In((8,), "index", high=6)], {"dim": 1}),
        Case("int32_index", [In((3, 6)), In((4,), "index", torch.int32, high=6)], {"dim": 1}),
        Case("of_permute_into_exp", [In((6, 3)), In((4,), "index", high=6)],
             build=lambda g, v: [Value(g.add("exp", [Value(g.add("index_select", [
                 Value(g.add("permute", [v[0]], {"dims": [1, 0]}).name), v[1]], {"dim": 1}).name)]).name)]),
        Case("neg_dim", [In((3, 6)), In((4,), "index", high=6)], {"dim": -1},
             ),
    ],
    "gather": [
        Case("dim1", [In((3, 5)), In((3, 4), "index", high=5)], {"dim": 1}),
        Case("dim0", [In((4, 3)), In((2, 3), "index", high=4)], {"dim": 0}),
        Case("smaller_index", [In((3, 5)), In((2, 4), "index", high=5)], {"dim": 1}),
        Case("mid_3d", [In((2, 5, 3)), In((2, 4, 3), "index", high=5)], {"dim": 1}),
        Case("neg_dim", [In((3, 5)), In((3, 4), "index", high=5)], {"dim": -1},
             ),
    ],
    "cat": [
        Case("dim1", [In((2, 3)), In((2, 5))], {"dim": 1}),
        Case("dim0_three", [In((2, 3)), In((1, 3)), In((4, 3))], {"dim": 0}),
        Case("mid_3d", [In((2, 3, 4)), In((2, 1, 4))], {"dim": 1}),
        Case("int64", [In((2, 3), "int", torch.int64), In((2, 5), "int", torch.int64)], {"dim": 1}),
        Case("same_input_twice", [In((2, 3))], build=lambda g, v: [Value(g.add("cat", [v[0], v[0]],
                                                                               {"dim": 1}).name)]),
        Case("views_into_relu", [In((3, 2)), In((2, 5))],
             build=lambda g, v: [Value(g.add("relu", [Value(g.add("cat", [
                 Value(g.add("permute", [v[0]], {"dims": [1, 0]}).name),
                 Value(g.add("exp", [v[1]]).name)], {"dim": 1}).name)]).name)]),
        Case("neg_dim", [In((2, 3)), In((2, 5))], {"dim": -1}),
    ],
    # ---- composites
    "softmax": [Case("last", [In((3, 8), "wide")], {"dim": -1}),
                Case("middle", [In((2, 5, 3), "wide")], {"dim": 1}),
                Case("first", [In((4, 3), "wide")], {"dim": 0})],
    "log_softmax": [Case("last", [In((3, 8), "wide")], {"dim": -1}),
                    Case("middle", [In((2, 5, 3), "wide")], {"dim": 1})],
    "layer_norm": [Case("affine", [In((3, 8)), In((8,)), In((8,))], {"normalized_shape": [8]}),
                   Case("plain", [In((3, 8))], {"normalized_shape": [8]}),
                   Case("weight_only", [In((3, 8)), In((8,))], {"normalized_shape": [8], "eps": 1e-3}),
                   Case("two_dims", [In((2, 3, 4)), In((3, 4)), In((3, 4))], {"normalized_shape": [3, 4]})],
    "rms_norm": [Case("weight", [In((3, 8)), In((8,))], {"normalized_shape": [8]}),
                 Case("plain", [In((2, 3, 8))], {"normalized_shape": [8], "eps": 1e-6}),
                 Case("two_dims", [In((2, 3, 4)), In((3, 4))], {"normalized_shape": [3, 4], "eps": 1e-5})],
    "batch_norm": [Case("nchw", [In((2, 4, 3, 3)), In((4,)), In((4,), "pos"), In((4,)), In((4,))]),
                   Case("nc", [In((5, 3)), In((3,)), In((3,), "pos"), In((3,)), In((3,))], {"eps": 1e-3})],
    "linear": [Case("bias", [In((3, 5)), In((4, 5)), In((4,))]),
               Case("no_bias", [In((3, 5)), In((4, 5))]),
               Case("3d_input", [In((2, 3, 5)), In((4, 5)), In((4,))])],
    "sdpa": [Case("plain", [In((2, 2, 4, 8)), In((2, 2, 5, 8)), In((2, 2, 5, 8))]),
             Case("bool_mask", [In((2, 2, 4, 8)), In((2, 2, 5, 8)), In((2, 2, 5, 8)), In((4, 5), "mask")]),
             Case("additive_mask", [In((2, 2, 4, 8)), In((2, 2, 5, 8)), In((2, 2, 5, 8)), In((2, 1, 4, 5))]),
             Case("causal", [In((1, 2, 4, 8)), In((1, 2, 4, 8)), In((1, 2, 4, 8))], {"is_causal": True}),
             Case("scale", [In((2, 4, 8)), In((2, 6, 8)), In((2, 6, 8))], {"scale": 0.3}),
             # 70 keys: a loop of whole 64-key tiles, then the last 6 in one masked 16-key tile
             Case("key_tail", [In((1, 2, 5, 8)), In((1, 2, 70, 8)), In((1, 2, 70, 8))]),
             Case("key_tail_mask", [In((1, 2, 5, 8)), In((1, 2, 70, 8)), In((1, 2, 70, 8)), In((5, 70), "mask")])],
    "embedding": [Case("2d_ids", [In((10, 4)), In((2, 3), "index", high=10)]),
                  Case("int32_ids", [In((7, 5)), In((4,), "index", torch.int32, high=7)])],
    "var": [Case("last", [In((3, 4, 5))], {"dims": [2]}),
            Case("middle_keep", [In((3, 4, 5))], {"dims": [1], "keepdim": True}),
            Case("two_dims_pop", [In((3, 4, 5))], {"dims": [0, 2], "correction": 0, "keepdim": True})],
}

# int8 (passes/quantize_int8.py): quantize saturates; int8 matmul/conv2d accumulate exactly in int32
CASES["quantize"] = [Case("saturating", [In((4, 6), "wide")], {"scale": 0.05}),
                     Case("ties_to_even", [In((4, 6), "int")], {"scale": 2.0})]  # 0.5, 1.0, 1.5 -> 0, 0, 2
CASES["dequantize"] = [Case("int8", [In((4, 6), "int8")], {"scale": 0.03})]
F8 = torch.float8_e4m3fn
CASES["quantize_fp8"] = [Case("saturating", [In((4, 6), "wide")], {"scale": 0.01}),  # |x| / 0.01 beyond 448
                         Case("subnormal", [In((4, 6), "randn")], {"scale": 500.0})]  # |x| / 500 below 2**-6
CASES["matmul"] = CASES["matmul"] + [Case("fp8", [In((5, 64), "randn", F8), In((64, 6), "randn", F8)])]
CASES["matmul"] = CASES["matmul"] + [Case("int8", [In((5, 72), "int8"), In((72, 6), "int8")]),
                                     Case("int8_batched", [In((2, 3, 40), "int8"), In((40, 5), "int8")])]
CASES["conv2d"] = CASES["conv2d"] + [
    Case("int8_pad1", [In((2, 4, 6, 6), "int8"), In((6, 4, 3, 3), "int8")], {"padding": [1, 1]}),
    Case("int8_groups2_stride2", [In((1, 4, 7, 7), "int8"), In((6, 2, 3, 3), "int8")], {"groups": 2, "stride": [2, 2]}),
    Case("int8_depthwise", [In((2, 4, 6, 6), "int8"), In((4, 1, 3, 3), "int8")], {"groups": 4, "padding": [1, 1]})]


def _params() -> list:
    params = []
    for op in TESTED_OPS:
        for case in CASES.get(op, [None]):
            for level in (0, 2):
                cid = case.id if case else "NO_RECIPE"
                marks = ([pytest.mark.xfail(strict=True, reason=case.xfail[level])]
                         if case and level in case.xfail else [])
                params.append(pytest.param(op, case, level, id=f"{op}-{cid}-O{level}", marks=marks))
    return params


# ---------------------------------------------------------------------------------------------- tests
def test_every_op_has_a_recipe() -> None:
    missing = [op for op in TESTED_OPS if not CASES.get(op)]
    assert not missing, f"ops without an input recipe in tests/test_ops.py CASES: {missing}"
    unknown = sorted(set(CASES) - set(TESTED_OPS))
    assert not unknown, f"CASES names ops that are not in the op table (or are source/fused): {unknown}"


@pytest.mark.parametrize("op,case,opt_level", _params())
def test_op_numerics(op: str, case: Case | None, opt_level: int) -> None:
    if case is None:
        pytest.fail(f"op {op!r} ({OPS[op].kind}) has no input recipe in CASES")
    check_case(op, case, opt_level)


FP16_CASES = [
    ("exp", Case("f16", [In((4, 6), "randn", F16)], tol=1e-2)),
    ("sigmoid", Case("f16", [In((4, 6), "wide", F16)], tol=1e-2)),
    ("gelu", Case("f16", [In((4, 6), "wide", F16)], {"approximate": "tanh"}, tol=1e-2)),
    ("add", Case("f16_bcast", [In((4, 6), "randn", F16), In((6,), "randn", F16)], tol=1e-2)),
    ("mul", Case("f16", [In((4, 6), "randn", F16), In((4, 6), "randn", F16)], tol=1e-2)),
    ("div", Case("f16", [In((4, 6), "randn", F16), In((4, 6), "nonzero", F16)], tol=1e-2)),
    ("cast", Case("f16_to_f32", [In((4, 6), "randn", F16)], {"dtype": "float32"}, tol=1e-2)),
    ("matmul", Case("f16", [In((5, 16), "randn", F16), In((16, 6), "randn", F16)], tol=1e-2)),
    ("matmul", Case("f16_batched", [In((2, 3, 8), "randn", F16), In((8, 4), "randn", F16)], tol=1e-2)),
]


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("op,case", [pytest.param(op, c, id=f"{op}-{c.id}") for op, c in FP16_CASES])
def test_op_numerics_fp16(op: str, case: Case, opt_level: int) -> None:
    check_case(op, case, opt_level)


def test_two_outputs_of_one_view() -> None:
    """A view returned twice (and its source) must give three distinct, correct output buffers."""
    def build(g: Graph, v: list[Value]) -> list[Value]:
        t = Value(g.add("permute", [v[0]], {"dims": [1, 0]}).name)
        return [t, t, v[0]]

    case = Case("twice", [In((3, 4))], build=build)
    for level in (0, 2):
        engine = check_case("permute", case, level)
        x = draw(In((3, 4)), seeded("twice")).to(DEVICE)
        a, b, c = engine.run(x)
        assert a.data_ptr() != b.data_ptr() and c.data_ptr() != x.data_ptr()


def test_fused_opt2_uses_fewer_kernels_than_opt0() -> None:
    """Sanity check that the opt_level=2 engines above really exercised fusion."""
    case = CASES["layer_norm"][0]
    k0 = len(check_case("layer_norm", case, 0).kernels)
    k2 = len(check_case("layer_norm", case, 2).kernels)
    assert k2 == 1 < k0


@pytest.mark.parametrize("opt_level", [0, 2])
def test_where_condition_stays_boolean(opt_level: int) -> None:
    g, _ = make_graph("where", CASES["where"][0])
    engine = trtjit.build(g, trtjit.BuildOptions(opt_level=opt_level, verify=True))
    (src,) = [k.source for k in engine.kernels]
    line = next(ln for ln in src.splitlines() if "tl.where(" in ln)
    cond = line.split("tl.where(", 1)[1].split(",", 1)[0]
    assert "float32" not in cond, f"where condition is cast to float: {line.strip()}"

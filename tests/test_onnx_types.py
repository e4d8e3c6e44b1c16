"""ONNX element types beyond torch's kernels, against onnx's reference implementation (bit-exact):
uint16/32/64 arithmetic, the narrow types (FLOAT8*, FLOAT4E2M1, FLOAT8E8M0, INT4/UINT4/INT2/UINT2) in Cast
both ways with and without saturation, QuantizeLinear/DequantizeLinear to and from them, and BitCast."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from trtjit.onnx_backend import Backend

T = TensorProto
FLOAT_NARROW = [T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ, T.FLOAT4E2M1]
INT_NARROW = [T.INT4, T.UINT4, T.INT2, T.UINT2]


def _model(nodes, inputs, outputs, opset=25):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run_both(model, feeds):
    ref = ReferenceEvaluator(model).run(None, feeds)
    got = Backend.prepare(model).run(list(feeds.values()))
    return ref, got


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    both_nan = np.isnan(fa) & np.isnan(fb)
    bad = ~both_nan & (fa != fb)
    assert not bad.any(), f"{a.dtype}: {fa[bad][:8]} expected, got {fb[bad][:8]} for positions {np.flatnonzero(bad)[:8]}"


def _probe_values(rng: np.random.Generator) -> np.ndarray:
    """Random values over many binades, every value of the narrow float types and the midpoints between
    them (ties), out-of-range values, zeros of both signs, infinities and NaN."""
    import ml_dtypes

    vals = [rng.standard_normal(300) * 10.0 ** rng.integers(-6, 6, 300),
            np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e9, -1e9, 1e-30, -1e-30])]
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn"):
        bits = 16 if name.startswith("float4") else 256
        v = np.arange(bits, dtype=np.uint8).view(getattr(ml_dtypes, name)).astype(np.float64)
        v = np.unique(v[np.isfinite(v)])
        vals += [v, (v[1:] + v[:-1]) / 2, v * 1.01, -v * 0.99]
    return np.concatenate(vals).astype(np.float32)


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("to", FLOAT_NARROW, ids=lambda t: T.DataType.Name(t))
def test_cast_to_narrow_float_is_bit_exact(to, saturate):
    if to == T.FLOAT4E2M1 and not saturate:
        pytest.skip("FLOAT4E2M1 has no saturate attribute")
    x = _probe_values(np.random.default_rng(to))
    attrs = {"saturate": saturate} if to != T.FLOAT4E2M1 else {}
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=to, **attrs),
                helper.make_node("Cast", ["y"], ["z"], to=T.FLOAT)],
               [helper.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
               [helper.make_tensor_value_info("y", to, list(x.shape)),
                helper.make_tensor_value_info("z", T.FLOAT, list(x.shape))])
    (ry, rz), (gy, gz) = _run_both(m, {"x": x})
    _same_bits(ry, gy)
    _same_bits(rz, gz)


@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
def test_cast_to_float8e8m0_rounding_modes(mode):
    rng = np.random.default_rng(1)
    x = np.concatenate([np.abs(rng.standard_normal(200)) * 10.0 ** rng.integers(-30, 30, 200),
                        2.0 ** np.arange(-20, 20), 1.5 * 2.0 ** np.arange(-20, 20), [0.0, np.inf, np.nan, 3e38]])
    x = x.astype(np.float32)
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=T.FLOAT8E8M0, round_mode=mode)],
               [helper.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
               [helper.make_tensor_value_info("y", T.FLOAT8E8M0, list(x.shape))])
    (ry,), (gy,) = _run_both(m, {"x": x})
    assert (ry.view(np.uint8) == gy.view(np.uint8)).all()


@pytest.mark.parametrize("to", INT_NARROW, ids=lambda t: T.DataType.Name(t))
def test_cast_to_narrow_int_wraps_and_back(to):
    x = np.arange(-20, 20, 0.75, dtype=np.float32)
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=to), helper.make_node("Cast", ["y"], ["z"], to=T.INT8)],
               [helper.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
               [helper.make_tensor_value_info("y", to, list(x.shape)),
                helper.make_tensor_value_info("z", T.INT8, list(x.shape))])
    (ry, rz), (gy, gz) = _run_both(m, {"x": x})
    assert ry.dtype == gy.dtype and (ry.astype(np.int8) == gy.astype(np.int8)).all()
    assert (rz == gz).all()


@pytest.mark.parametrize("qt", [T.INT4, T.UINT4, T.FLOAT8E4M3FN, T.FLOAT8E5M2], ids=lambda t: T.DataType.Name(t))
def test_quantize_dequantize_narrow(qt):
    from onnx import numpy_helper

    rng = np.random.default_rng(qt)
    x = (rng.standard_normal((3, 8)) * 6).astype(np.float32)
    scale = np.array([0.5, 1.5, 2.0], np.float32)
    zp_np = helper.tensor_dtype_to_np_dtype(qt)
    zps = [0, 0, 0] if qt in FLOAT_NARROW else [1, 0, 2]  # float8 zero points must be zero
    zp = numpy_helper.from_array(np.array(zps).astype(np.float32).astype(zp_np), "zp")
    m = _model([helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], axis=0),
                helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], axis=0)],
               [helper.make_tensor_value_info("x", T.FLOAT, [3, 8])],
               [helper.make_tensor_value_info("q", qt, [3, 8]), helper.make_tensor_value_info("y", T.FLOAT, [3, 8])])
    m.graph.initializer.extend([numpy_helper.from_array(scale, "scale"), zp])
    (rq, ry), (gq, gy) = _run_both(m, {"x": x})
    _same_bits(rq, gq)
    assert np.array_equal(ry, gy)


@pytest.mark.parametrize("dt", [T.UINT16, T.UINT32, T.UINT64], ids=lambda t: T.DataType.Name(t))
def test_unsigned_arithmetic_and_compare(dt):
    npdt = helper.tensor_dtype_to_np_dtype(dt)
    rng = np.random.default_rng(dt)
    hi = {T.UINT16: 1 << 16, T.UINT32: 1 << 32, T.UINT64: 1 << 40}[dt]  # Div and Mod compute in fp64
    a = rng.integers(1, hi, 64, dtype=np.uint64).astype(npdt)
    b = rng.integers(1, hi, 64, dtype=np.uint64).astype(npdt)
    nodes = [helper.make_node(op, ["a", "b"], [op.lower()]) for op in ("Add", "Sub", "Mul", "Div", "Mod", "Max",
                                                                        "Less", "BitwiseXor")]
    nodes.append(helper.make_node("BitShift", ["a", "s"], ["shr"], direction="RIGHT"))
    s = (b % np.array(7, npdt)).astype(npdt)
    outs = [helper.make_tensor_value_info(n.output[0], T.BOOL if n.op_type == "Less" else dt, [64]) for n in nodes]
    m = _model(nodes, [helper.make_tensor_value_info(n, dt, [64]) for n in ("a", "b", "s")], outs, opset=18)
    ref, got = _run_both(m, {"a": a, "b": b, "s": s})
    for n, r, g in zip(nodes, ref, got):
        assert r.dtype == g.dtype and np.array_equal(r, g), n.op_type


def test_bitcast_float_int():
    x = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    m = _model([helper.make_node("BitCast", ["x"], ["y"], to=T.INT32)],
               [helper.make_tensor_value_info("x", T.FLOAT, [16])], [helper.make_tensor_value_info("y", T.INT32, [16])],
               opset=26)
    (got,) = Backend.prepare(m).run([x])
    assert np.array_equal(got, x.view(np.int32))
